package flux

// The one batch path behind CheckBatch, CheckEach and their async and
// hooked forms: validate, set invalid items aside if asked to, run.

import (
	"context"
	"fmt"
)

// checkBatch is the one batch path. itemErrs, when not nil, receives the
// errors of items that fail at run time; eachInvalid says invalid items are
// reported there too instead of failing the batch.
func (l *Limiter) checkBatch(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, eachInvalid bool) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if len(out) < len(reqs) {
		return fmt.Errorf("%w: out has room for %d decisions, reqs has %d", ErrInvalidArgument, len(out), len(reqs))
	}
	// The common case in one pass of plain comparisons; validateRequest,
	// which builds the error, only for an item that fails them.
	maxLen, capacity := uint(l.maxKeyLen), l.capacity.Load()
	invalid := 0
	for i := range reqs {
		r := &reqs[i]
		if uint(len(r.Key))-1 >= maxLen || uint64(r.Cost) > uint64(capacity) || r.Peek {
			if err := l.validateRequest(r); err != nil {
				if !eachInvalid {
					return &BatchError{Index: i, Err: err}
				}
				itemErrs[i] = err
				invalid++
			}
		}
	}
	if invalid > 0 {
		return l.checkValid(ctx, reqs, out, itemErrs, invalid)
	}
	return l.run(ctx, reqs, out, itemErrs)
}

// checkValid decides the items of reqs that have no error yet, in one
// batch, and leaves the out entries of the others zero.
func (l *Limiter) checkValid(ctx context.Context, reqs []Request, out []Decision, itemErrs []error, invalid int) error {
	n := len(reqs) - invalid
	idx := make([]int, 0, n)
	sub := make([]Request, 0, n)
	for i := range reqs {
		if itemErrs[i] == nil {
			idx = append(idx, i)
			sub = append(sub, reqs[i])
		} else {
			out[i] = Decision{}
		}
	}
	subOut := make([]Decision, n)
	subErrs := make([]error, n)
	if err := l.run(ctx, sub, subOut, subErrs); err != nil {
		return err
	}
	for j, i := range idx {
		out[i], itemErrs[i] = subOut[j], subErrs[j]
	}
	return nil
}

// run sends validated requests to the shards and waits for their answers.
func (l *Limiter) run(ctx context.Context, reqs []Request, out []Decision, itemErrs []error) error {
	if len(reqs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.eng.start(ctx, reqs, out, ctx.Done() == nil)
	if err != nil {
		return err
	}
	return l.eng.finish(ctx, p, out, itemErrs)
}
