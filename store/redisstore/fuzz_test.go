package redisstore_test

import (
	"strconv"
	"testing"

	"github.com/fluxlimiter/flux/store/redisstore"
	"github.com/fluxlimiter/flux/store/storetest"
)

// FuzzCheckGCRA drives the Lua script from arbitrary stored TATs and times
// over the whole int64 range and compares every decision and stored TAT
// with algorithm.GCRA (storetest.FuzzGCRA).
func FuzzCheckGCRA(f *testing.F) {
	rdb := newClient(f)
	p := prefix(f, rdb)
	s := redisstore.New(rdb, redisstore.Options{Prefix: p})
	full := p + "g:l:fuzz" // the record of key "fuzz" of limiter "l"
	storetest.FuzzGCRA(f, s,
		func(t *testing.T, tat int64, fresh bool) error {
			if fresh {
				return rdb.Del(t.Context(), full).Err()
			}
			return rdb.Set(t.Context(), full, strconv.FormatInt(tat, 10), 0).Err()
		},
		func(t *testing.T) (int64, error) {
			v, err := rdb.Get(t.Context(), full).Result()
			if err != nil {
				return 0, err
			}
			return strconv.ParseInt(v, 10, 64)
		})
}
