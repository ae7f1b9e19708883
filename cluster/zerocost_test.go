package cluster_test

import (
	"testing"
	"testing/synctest"

	flux "github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/bus"
	"github.com/fluxlimiter/flux/cluster"
)

// A flux.Request with its Cost unset is a check of cost 1 in every mode,
// whether this node decides it or forwards it to the key's owner: a
// forgotten field never turns checks into peeks.
func TestCheckBatchZeroCostCountsOne(t *testing.T) {
	for _, mode := range []cluster.Mode{cluster.Local, cluster.BestEffort, cluster.Strict, cluster.Hybrid} {
		t.Run(mode.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net := bus.NewNetwork()
				ns := startNodes(t, net, []string{"a", "b"}, spec("api", mode, 1, 2)) // capacity 3
				defer closeAll(ns)
				a := ns[0]
				owners := []string{"a", "b"}
				if mode == cluster.Hybrid {
					// Hybrid decides far-from-the-limit items here and near ones
					// at the owner, which learns of the former by gossip: within
					// one batch it may admit more than strict would, for any cost.
					owners = owners[:1]
				}
				for _, owner := range owners {
					k := keyOwnedBy(t, a.coord.View(), owner)
					reqs := []flux.Request{{Key: k}, {Key: k}, {Key: k}, {Key: k}}
					out := make([]cluster.Answer, len(reqs))
					errs := make([]error, len(reqs))
					if err := a.coord.CheckBatch(t.Context(), "api", reqs, out, errs); err != nil {
						t.Fatal(err)
					}
					for i := range 3 {
						if errs[i] != nil || !out[i].Allowed {
							t.Errorf("key owned by %s, item %d: %+v, %v; want allowed", owner, i, out[i], errs[i])
						}
					}
					if errs[3] != nil || out[3].Allowed {
						t.Errorf("key owned by %s: the 4th unset-cost request on capacity 3: %+v, %v; want denied", owner, out[3], errs[3])
					}
				}
			})
		})
	}
}
