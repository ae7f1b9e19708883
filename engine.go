package flux

import (
	"context"
	"time"

	"github.com/fluxlimiter/flux/shard"
)

// engine is the algorithm-independent face of a group of shards.
type engine interface {
	check(ctx context.Context, key string, cost int64) (Decision, error)
	checkAsync(ctx context.Context, key string, cost int64) (chan shard.Reply, <-chan struct{}, error)
	start(ctx context.Context, reqs []Request, out []Decision, direct bool) (*pending, error)
	finish(ctx context.Context, p *pending, out []Decision, itemErrs []error) error
	apply(ctx context.Context, ups []Update) error
	setLimit(ctx context.Context, lim Limit) (capacity int64, err error)
	cleanup(ctx context.Context, shard int, staleAfter time.Duration) (int, error)
	snapshot(ctx context.Context) ([]KeyState, error)
	restore(ctx context.Context, states []KeyState) error
	shardCount() int
	len() int
	stats() []shard.Stats
	storeStats() []shard.StoreStats
	stop()
}
