// Package names validates the limiter names and keys that every store
// backend is given, so that they refuse the same inputs with the same
// errors.
package names

import (
	"fmt"

	"github.com/fluxlimiter/flux/store"
)

// Check returns an error wrapping store.ErrInvalidKey if limiter or one of
// keys is empty. Backends add their own limits on top (pgstore: UTF-8
// without NUL). It is safe for concurrent use.
func Check(limiter string, keys ...string) error {
	if limiter == "" {
		return fmt.Errorf("%w: empty limiter name", store.ErrInvalidKey)
	}
	return Keys(keys...)
}

// Keys returns an error wrapping store.ErrInvalidKey if one of keys is
// empty.
func Keys(keys ...string) error {
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("%w: empty key", store.ErrInvalidKey)
		}
	}
	return nil
}

// EntryKeys is Keys over the keys of entries.
func EntryKeys(entries []store.Entry) error {
	for i := range entries {
		if entries[i].Key == "" {
			return fmt.Errorf("%w: empty key (entry %d)", store.ErrInvalidKey, i)
		}
	}
	return nil
}
