package pgstore

// GCRARetries returns how many times CheckGCRA ran its statement again
// after racing with another writer, since the process started.
func GCRARetries() int64 { return gcraRetries.Load() }
