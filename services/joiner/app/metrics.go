package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// registerMetrics creates the joiner's metrics in reg (the label join registers its own).
func (j *Joiner) registerMetrics(reg prometheus.Registerer) {
	f := promauto.With(reg)
	j.emitted = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_comparisons_total", Help: "Comparisons committed, by status."}, []string{"status"})
	j.pendingG = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_pending_joins", Help: "Joins waiting for a missing side."})
	j.duplicates = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_duplicate_inputs_total", Help: "Inputs dropped because their side had already arrived or been emitted."})
	j.restored = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_state_restored_total", Help: "Changelog entries read while restoring assigned partitions."})
	j.txns = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_transactions_total", Help: "Kafka transactions by result."}, []string{"result"})
	j.failures = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_session_failures_total", Help: "Kafka sessions replaced after a failure (state restored from the changelogs)."})
	j.lag = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_window_lag_seconds", Help: "Wall clock minus the oldest event-time watermark of the owned partitions: how far behind real time joins close."})
	j.keys = f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_joiner_state_keys", Help: "Keys in the in-memory join state: pending joins and remembered emitted ids."}, []string{"kind"})
}

// observe updates the state gauges.
func (j *Joiner) observe(now time.Time) {
	pending, emitted := 0, 0
	var oldest time.Time
	for p, ps := range j.state.parts {
		pending += len(ps.pending)
		emitted += len(ps.emitted)
		if j.owned[p] && !ps.watermark.IsZero() && (oldest.IsZero() || ps.watermark.Before(oldest)) {
			oldest = ps.watermark
		}
	}
	j.pendingG.Set(float64(pending))
	j.keys.WithLabelValues("pending").Set(float64(pending))
	j.keys.WithLabelValues("emitted").Set(float64(emitted))
	if !oldest.IsZero() {
		j.lag.Set(now.Sub(oldest).Seconds())
	}
}
