// Package errs holds the sentinel errors shared by every Flux package. The
// root package re-exports each of them under its public name (flux.ErrClock
// and so on), so callers match them with errors.Is without importing this
// package.
package errs

//lint:file-ignore ST1012 the names are the Err-less halves of the root package's ErrFoo re-exports.

import "errors"

// The sentinels. Their texts name the package users see, "flux".
var (
	InvalidRate       = limitError("flux: invalid rate")
	InvalidBurst      = limitError("flux: invalid burst")
	InvalidCost       = errors.New("flux: invalid cost")
	CostExceedsBurst  = errors.New("flux: cost exceeds capacity")
	EmptyKey          = errors.New("flux: empty key")
	KeyTooLong        = errors.New("flux: key too long")
	Clock             = errors.New("flux: clock failed")
	Closed            = errors.New("flux: limiter closed")
	Overloaded        = errors.New("flux: overloaded")
	Full              = errors.New("flux: key table full")
	Panic             = errors.New("flux: internal panic")
	InvalidState      = errors.New("flux: invalid stored state")
	InvalidAlgorithm  = limitError("flux: invalid algorithm")
	InvalidWindow     = limitError("flux: invalid window")
	InvalidLimitCount = limitError("flux: invalid request count")
	// InvalidLimit is matched by every error above that describes a field
	// of a Limit, so callers need one sentinel for "this limit is
	// unusable" and the message still names the field.
	InvalidLimit    = errors.New("flux: invalid limit")
	AlgorithmChange = errors.New("flux: cannot change the algorithm of a running limiter")
)

// limitError is a sentinel for one field of a Limit: errors.Is matches it
// and InvalidLimit.
type limitError string

func (e limitError) Error() string { return string(e) }

// Is reports whether target is InvalidLimit (errors.Is compares the
// sentinel itself first).
func (e limitError) Is(target error) bool { return target == InvalidLimit }
