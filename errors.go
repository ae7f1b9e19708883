package flux

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fluxlimiter/flux/internal/errs"
)

// Sentinel errors, matched with errors.Is. Errors returned by a Limiter wrap
// one of them (and sometimes a cause as well, such as a clock's error or a
// context's). A denied request is not an error: it is a Decision with
// Allowed false.
var (
	// ErrInvalidLimit: a Limit is unusable: Limit.Validate, New and
	// SetLimit return it, and the message names the field. Rate must be a
	// finite number with 0 < Rate ≤ 1e9; Burst must be finite and ≥ 0, with
	// a tolerance under about 146 years; Requests must be from 1 to 2^31−1
	// (65536 for the sliding window log); Window must be positive and under
	// about 146 years, Calendar a known unit; Algorithm must name an
	// algorithm; and no field the algorithm does not take may be set.
	ErrInvalidLimit = errs.InvalidLimit
	// ErrInvalidCost: a negative cost.
	ErrInvalidCost = errs.InvalidCost
	// ErrCostExceedsCapacity: a cost above the capacity (Limit.Capacity).
	// Such a request could never be admitted, so it is an error, not a
	// denial.
	ErrCostExceedsCapacity = errs.CostExceedsBurst
	// ErrEmptyKey: the key is "".
	ErrEmptyKey = errs.EmptyKey
	// ErrKeyTooLong: the key is longer than the limiter's bound
	// (WithMaxKeyLen).
	ErrKeyTooLong = errs.KeyTooLong
	// ErrClock: the clock failed; the error also wraps the clock's own error.
	ErrClock = errs.Clock
	// ErrClosed: the limiter has been closed.
	ErrClosed = errs.Closed
	// ErrOverloaded: a shard's mailbox stayed full past the caller's
	// deadline or the configured wait (WithOverloadWait).
	ErrOverloaded = errs.Overloaded
	// ErrFull: a new key could not be stored because its shard holds
	// WithMaxKeys keys and none of them is idle. The request is refused
	// rather than admitted unrecorded, so no key escapes its limit.
	ErrFull = errs.Full
	// ErrPanic: a shard's handler panicked while answering this request.
	// The shard keeps serving its other keys.
	ErrPanic = errs.Panic
	// ErrInvalidState: a stored or transferred state could not be decoded.
	ErrInvalidState = errs.InvalidState
	// ErrAlgorithmChange: SetLimit was given a limit of another algorithm.
	// States of unrelated algorithms cannot be converted into one another,
	// so a running limiter keeps its algorithm: start a new Limiter instead.
	ErrAlgorithmChange = errs.AlgorithmChange
)

// BatchError reports a batch item that could not be decided. When an item
// is invalid (an empty key, a bad cost...), CheckBatch returns a
// *BatchError for the first such item before anything is applied. An item
// that fails at run time (ErrFull) is reported the same way after the other
// items were decided.
type BatchError struct {
	// Index is the position of the invalid item in the request slice.
	Index int
	// Err wraps the sentinel that describes what is wrong with it.
	Err error
}

// Error describes the invalid item.
func (e *BatchError) Error() string {
	// Err is usually a flux sentinel that names the package already.
	return fmt.Sprintf("flux: batch item %d: %s", e.Index, strings.TrimPrefix(fmt.Sprint(e.Err), "flux: "))
}

// Unwrap returns Err, so errors.Is(err, ErrEmptyKey) and the like match.
func (e *BatchError) Unwrap() error { return e.Err }

// ErrInvalidArgument: an option or a method was given an unusable value,
// such as WithShards(0), an out slice shorter than the requests, or a
// negative duration.
var ErrInvalidArgument = errors.New("flux: invalid argument")
