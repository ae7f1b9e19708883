package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxlimiter/flux"
)

// The store counters of tracked limiters (flux.Limiter.StoreStats), read at
// scrape time. Without a store they stay 0.
var (
	descStoreLoads = prometheus.NewDesc("flux_store_loads_total",
		"Keys a limiter loaded from its store (with WithAtomicStore: checks sent to the store).", []string{"limiter"}, nil)
	descStoreLoadErrs = prometheus.NewDesc("flux_store_load_errors_total",
		"Loads (or atomic checks) that failed or timed out; the store failure policy decided their requests.", []string{"limiter"}, nil)
	descStoreSaves = prometheus.NewDesc("flux_store_saves_total",
		"Flushes of dirty keys to the store (one Save call each).", []string{"limiter"}, nil)
	descStoreSaveErrs = prometheus.NewDesc("flux_store_save_errors_total",
		"Flushes that failed or timed out; their keys are saved again later.", []string{"limiter"}, nil)
	descStoreFallbacks = prometheus.NewDesc("flux_store_fallbacks_total",
		"Requests decided by the store failure policy (local, open or closed) because the store failed or was slow.", []string{"limiter"}, nil)
	descStoreForeign = prometheus.NewDesc("flux_store_foreign_states_total",
		"Loaded states written by another algorithm (the limiter's algorithm changed), ignored.", []string{"limiter"}, nil)
	descStoreDirty = prometheus.NewDesc("flux_store_dirty_keys",
		"Keys changed since they were last saved to the store.", []string{"limiter"}, nil)
)

var storeDescs = []*prometheus.Desc{descStoreLoads, descStoreLoadErrs, descStoreSaves, descStoreSaveErrs, descStoreFallbacks, descStoreForeign, descStoreDirty}

// collectStore sends the store counters of the limiter tracked as name.
func collectStore(ch chan<- prometheus.Metric, name string, l *flux.Limiter) {
	var s flux.Stats
	for _, sh := range l.Stats() {
		s.Loads += sh.Loads
		s.LoadErrors += sh.LoadErrors
		s.Saves += sh.Saves
		s.SaveErrors += sh.SaveErrors
		s.Fallbacks += sh.Fallbacks
		s.Foreign += sh.Foreign
		s.Dirty += sh.Dirty
	}
	ch <- prometheus.MustNewConstMetric(descStoreLoads, prometheus.CounterValue, float64(s.Loads), name)
	ch <- prometheus.MustNewConstMetric(descStoreLoadErrs, prometheus.CounterValue, float64(s.LoadErrors), name)
	ch <- prometheus.MustNewConstMetric(descStoreSaves, prometheus.CounterValue, float64(s.Saves), name)
	ch <- prometheus.MustNewConstMetric(descStoreSaveErrs, prometheus.CounterValue, float64(s.SaveErrors), name)
	ch <- prometheus.MustNewConstMetric(descStoreFallbacks, prometheus.CounterValue, float64(s.Fallbacks), name)
	ch <- prometheus.MustNewConstMetric(descStoreForeign, prometheus.CounterValue, float64(s.Foreign), name)
	ch <- prometheus.MustNewConstMetric(descStoreDirty, prometheus.GaugeValue, float64(s.Dirty), name)
}
