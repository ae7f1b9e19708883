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
