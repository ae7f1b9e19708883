package flux

import (
	"fmt"
	"unsafe"

	"github.com/fluxlimiter/flux/shard"
)

// Request is one item of a batch (CheckBatch, CheckBatchAsync): a check of
// Cost for Key. An unset Cost (0) means 1, as a missing "cost" does on the
// wire, so a forgotten field never turns a check into a peek. Set Peek,
// and leave Cost 0, to ask what a check would get without consuming
// anything, as Limiter.Peek does for a single key.
type Request struct {
	Key  string
	Cost int
	Peek bool
}

// cost returns the cost the request is decided with: 0 for a peek, 1 for
// an unset Cost.
func (r *Request) cost() int {
	switch {
	case r.Peek:
		return 0
	case r.Cost == 0:
		return 1
	}
	return r.Cost
}

// The shards read a caller's batch in place as []shard.Request, a type
// with the same fields in the same order. This conversion stops compiling
// if the two ever differ, which is what makes shardRequests sound.
var _ = shard.Request(Request{})

// shardRequests views reqs as the shards' request type without copying:
// a batch of any size then costs no allocation per item.
func shardRequests(reqs []Request) []shard.Request {
	return unsafe.Slice((*shard.Request)(unsafe.Pointer(unsafe.SliceData(reqs))), len(reqs))
}

// validateRequest checks one batch item before it is sent to a shard.
func (l *Limiter) validateRequest(r *Request) error {
	if r.Peek && r.Cost != 0 {
		return fmt.Errorf("%w: a peek with cost %d (a peek costs nothing; leave Cost 0)", ErrInvalidCost, r.Cost)
	}
	return l.validate(r.Key, r.cost())
}

// Update is an admission of Cost for Key decided elsewhere (by another
// node) at At, in Unix nanoseconds. Apply adds it without deciding.
type Update struct {
	Key  string
	At   int64
	Cost int
}

// KeyState is one key's state in a snapshot, encoded by the limiter's
// algorithm (for GCRA: the theoretical arrival time as 8 big-endian bytes).
type KeyState struct {
	Key   string
	State []byte
}

// validate checks one request before it is sent to a shard. Keys and
// costs are validated here and nowhere else: single checks, batches,
// futures and Validate all come through it.
func (l *Limiter) validate(key string, cost int) error {
	if err := l.validateKey(key); err != nil {
		return err
	}
	switch {
	case cost < 0:
		return fmt.Errorf("%w: %d", ErrInvalidCost, cost)
	case int64(cost) > l.capacity.Load():
		return fmt.Errorf("%w: cost %d, capacity %d", ErrCostExceedsCapacity, cost, l.capacity.Load())
	}
	return nil
}

func (l *Limiter) validateKey(key string) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > l.maxKeyLen:
		return fmt.Errorf("%w: %d bytes (max %d)", ErrKeyTooLong, len(key), l.maxKeyLen)
	}
	return nil
}

// validateUpdate checks an admission made elsewhere. Its cost may exceed
// the capacity: a peer publishes the sum of what it admitted in a while.
func (l *Limiter) validateUpdate(u *Update) error {
	if err := l.validateKey(u.Key); err != nil {
		return err
	}
	if u.Cost < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCost, u.Cost)
	}
	return nil
}

// Validate reports whether the limiter would accept r, as CheckBatch
// validates each item, without deciding anything: the error wraps
// ErrEmptyKey, ErrKeyTooLong, ErrInvalidCost or ErrCostExceedsCapacity.
// It is for callers that route a request elsewhere before it is decided
// (the cluster forwards it to the key's owner) and want it refused here.
func (l *Limiter) Validate(r Request) error { return l.validateRequest(&r) }
