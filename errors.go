package flux

import (
	"errors"
	"fmt"

	"github.com/fluxlimiter/flux/internal/errs"
)

// Sentinel errors, matched with errors.Is. Errors returned by a Limiter wrap
// one of them (and sometimes a cause as well, such as a clock's error or a
// context's). A denied request is not an error: it is a Decision with
// Allowed false.
var (
	// ErrInvalidRate: Rate is not a finite number with 0 < Rate ≤ 1e9.
	ErrInvalidRate = errs.InvalidRate
	// ErrInvalidBurst: Burst is negative, not finite, or so large that the
	// tolerance would exceed about 146 years.
	ErrInvalidBurst = errs.InvalidBurst
	// ErrInvalidCost: a negative cost.
	ErrInvalidCost = errs.InvalidCost
	// ErrCostExceedsCapacity: a cost above the capacity (Limit.Capacity).
	// Such a request could never be admitted, so it is an error, not a
	// denial.
	ErrCostExceedsCapacity = errs.CostExceedsBurst
	// ErrCostExceedsBurst is the former name of ErrCostExceedsCapacity
	// (the same error).
	//
	// Deprecated: use ErrCostExceedsCapacity; window algorithms have no
	// burst, and the message and wire reason always said capacity.
	ErrCostExceedsBurst = ErrCostExceedsCapacity
	// ErrEmptyKey: the key is "".
	ErrEmptyKey = errs.EmptyKey
	// ErrKeyTooLong: the key is longer than the limiter's bound
	// (DefaultMaxKeyLen unless WithMaxKeyLen says otherwise).
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
	// ErrInvalidAlgorithm: Limit.Algorithm names no algorithm (see
	// Algorithms).
	ErrInvalidAlgorithm = errs.InvalidAlgorithm
	// ErrInvalidWindow: a window algorithm's Window is not positive or is
	// longer than about 146 years, Calendar names no unit, or a window
	// parameter is given to an algorithm that takes none.
	ErrInvalidWindow = errs.InvalidWindow
	// ErrInvalidLimit: a window algorithm's Limit is below 1 or above its
	// maximum (2^31−1; 65536 for the sliding window log), or Limit is given
	// to an algorithm that takes Rate and Burst.
	ErrInvalidLimit = errs.InvalidLimitCount
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
func (e *BatchError) Error() string { return fmt.Sprintf("flux: batch item %d: %v", e.Index, e.Err) }

// Unwrap returns Err, so errors.Is(err, ErrEmptyKey) and the like match.
func (e *BatchError) Unwrap() error { return e.Err }

// ErrInvalidOption: an option was given an unusable value.
var ErrInvalidOption = errors.New("flux: invalid option")

// ErrInvalidArgument: a method was given an unusable argument, such as an
// out slice shorter than the requests or a negative duration.
var ErrInvalidArgument = errors.New("flux: invalid argument")
