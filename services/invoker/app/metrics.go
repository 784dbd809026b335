package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics implements shadow.Observer and the invoker's own counters.
type metrics struct {
	calls        *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	circuitOpen  *prometheus.GaugeVec
	lag          *prometheus.GaugeVec
	transactions *prometheus.CounterVec
	ignored      *prometheus.CounterVec
	dispatched   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		calls:        f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_calls_total", Help: "Shadow results by shadow and outcome (ok or error kind)."}, []string{"shadow", "outcome"}),
		latency:      f.NewHistogramVec(prometheus.HistogramOpts{Name: "understudy_invoker_call_latency_seconds", Help: "Shadow call latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"shadow"}),
		inFlight:     f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_invoker_in_flight_calls", Help: "Shadow calls in flight."}, []string{"shadow"}),
		circuitOpen:  f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_invoker_circuit_open", Help: "1 while the shadow's circuit breaker is open."}, []string{"shadow"}),
		lag:          f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_invoker_consumer_lag_records", Help: "Inference events behind the partition's high watermark after a lane's last batch."}, []string{"lane", "partition"}),
		transactions: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_transactions_total", Help: "Kafka transactions by result (committed, aborted)."}, []string{"result"}),
		ignored:      f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_events_ignored_total", Help: "Inference events no shadow is configured for, by reason."}, []string{"reason"}),
		dispatched:   f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_calls_dispatched_total", Help: "Shadow calls by how they left: paced (within 10 ms of the request's arrival gap), late (later, for a request under 1 s old), catch_up (a backlog, called at once) or off."}, []string{"shadow", "pacing"}),
	}
}

func (m *metrics) Called(shadow, outcome string, latency time.Duration) {
	m.calls.WithLabelValues(shadow, outcome).Inc()
	if latency > 0 {
		m.latency.WithLabelValues(shadow).Observe(latency.Seconds())
	}
}

func (m *metrics) InFlight(shadow string, delta int) {
	m.inFlight.WithLabelValues(shadow).Add(float64(delta))
}

func (m *metrics) Circuit(shadow string, open bool) {
	v := 0.0
	if open {
		v = 1
	}
	m.circuitOpen.WithLabelValues(shadow).Set(v)
}
