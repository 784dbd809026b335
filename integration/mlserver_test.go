package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	tap "github.com/understudy-ml/understudy/services/tap/app"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
)

// TestRealMLServer puts the pipeline in front of a real MLServer (PyPI, scikit-learn runtime):
// iris-a is the champion, iris-b the candidate shadow. Requests come in bursts separated by
// idle gaps of 0 to 70 s (MLServer's uvicorn drops idle keep-alive connections after 5 s) and
// each burst starts with a request MLServer answers 500 (after which it drops the connection).
// No caller may see a failure the model did not make, through either tap engine; the invoker's
// calls never fail on a dead connection, so its breaker stays closed; and MLServer's INT64
// class predictions give agreement and accuracy equal to exact counts.
func TestRealMLServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ml, err := harness.StartMLServer(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err) // make test installs MLServer; never skip
	}
	defer func() { _ = ml.Stop() }()
	experiment := fmt.Sprintf("mlserver-%d", time.Now().UnixNano())
	ensureTopics(ctx, t)
	p := startPipeline(ctx, t, pipeline.Options{
		Brokers: broker.Brokers, DatabaseURL: postgres.URL, Experiment: experiment,
		ChampionURL: ml.URL, ShadowURL: ml.URL + "/v2/models/iris-b/infer", JoinWindow: 20 * time.Second,
	})
	stdURL := startTap(ctx, t, ml.URL, experiment+"-std", tap.EngineStd)

	// One keep-alive client per tap: the caller's connection stays, the tap's to MLServer idles.
	clients := map[string]*http.Client{"fast": {Timeout: 30 * time.Second}, "std": {Timeout: 30 * time.Second}}
	taps := map[string]string{"fast": p.ProxyURL, "std": stdURL}
	post := func(engine, id string, features []float64) (int, []byte) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "predict", "shape": []int{1, len(features)}, "datatype": "FP64", "data": features}}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, taps[engine]+"/v2/models/iris-a/infer", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", id)
		resp, err := clients[engine].Do(req)
		if err != nil {
			t.Fatalf("%s tap, request %s: %v", engine, id, err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, b
	}
	gaps := []time.Duration{0, 2 * time.Second, 6 * time.Second, 11 * time.Second, 70 * time.Second}
	per := (len(ml.Rows) + len(gaps) - 1) / len(gaps)
	var labels []*kgo.Record
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for burst, gap := range gaps {
		time.Sleep(gap)
		for engine := range taps {
			// Three features instead of four: scikit-learn raises, MLServer answers 500 and
			// closes the connection. The caller must get that 500, not a 502.
			if status, _ := post(engine, fmt.Sprintf("%s-bad-%d-%s", experiment, burst, engine), []float64{1, 2, 3}); status != http.StatusInternalServerError {
				t.Errorf("%s tap, burst %d: the bad request got %d, want MLServer's 500", engine, burst, status)
			}
		}
		for i := burst * per; i < min(len(ml.Rows), (burst+1)*per); i++ {
			row := ml.Rows[i]
			for engine := range taps {
				id := fmt.Sprintf("%s-%03d-%s", experiment, i, engine)
				status, body := post(engine, id, row.Features)
				var out struct {
					Outputs []struct {
						Datatype string  `json:"datatype"`
						Data     []int64 `json:"data"`
					} `json:"outputs"`
				}
				if status != http.StatusOK || json.Unmarshal(body, &out) != nil || len(out.Outputs) != 1 || out.Outputs[0].Datatype != "INT64" || out.Outputs[0].Data[0] != int64(row.A) {
					t.Fatalf("%s tap, row %d after a %s gap: %d %s", engine, i, gap, status, body)
				}
				if engine == "fast" {
					v, err := codecs.Label.Encode(nil, schemas.LabelEvent{RequestID: id, Experiment: experiment, EventTime: time.Now(), Value: schemas.Number(float64(row.Label)), Source: "iris"})
					if err != nil {
						t.Fatal(err)
					}
					labels = append(labels, &kgo.Record{Topic: schemas.TopicLabels, Key: []byte(id), Value: v})
				}
			}
		}
	}
	if err := newClient(t).ProduceSync(ctx, labels...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Exact counts from scikit-learn's own predictions of the same rows.
	var agree, rightA, rightB int
	for _, r := range ml.Rows {
		agree += b2i(r.A == r.B)
		rightA += b2i(r.A == r.Label)
		rightB += b2i(r.B == r.Label)
	}
	n := float64(len(ml.Rows))
	st := waitStats(ctx, t, p.OpsURLs["aggregator"], experiment, uint64(len(ml.Rows)))
	for _, c := range []struct {
		name      string
		got, want *float64
	}{
		{"agreement", st.Predictions.Agreement, ptr(float64(agree) / n)},
		{"champion accuracy", st.Labels.Champion.Accuracy, ptr(float64(rightA) / n)},
		{"candidate accuracy", st.Labels.Shadow.Accuracy, ptr(float64(rightB) / n)},
	} {
		if c.got == nil || math.Abs(*c.got-*c.want) > 1e-9 {
			t.Errorf("%s = %v, want exactly %v", c.name, deref(c.got), *c.want)
		}
	}
	calls := counters(t, p.Registries["invoker"], "understudy_invoker_calls_total", "outcome")
	if calls["ok"] != float64(len(ml.Rows)) || calls["connect"] != 0 || calls["timeout"] != 0 || calls["circuit_open"] != 0 {
		t.Errorf("invoker calls by outcome %v: want %d ok and no connect, timeout or circuit_open", calls, len(ml.Rows))
	}
	if open := counters(t, p.Registries["invoker"], "understudy_invoker_circuit_open", "shadow"); sumValues(open) != 0 {
		t.Errorf("a breaker is open: %v", open)
	}
}

// startTap starts a tap of engine in front of champion, reporting to the shared broker.
func startTap(ctx context.Context, t *testing.T, champion, experiment, engine string) string {
	t.Helper()
	cfg := tap.NewDefaultConfig()
	cfg.Kafka.Brokers = broker.Brokers
	cfg.Ops.ListenAddr, cfg.ListenAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ChampionURL, cfg.Experiment, cfg.Engine = champion, experiment, engine
	tp, err := tap.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	addr, err := tp.Listen()
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tp.Run(tctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s tap: %v", engine, err)
		}
	})
	return "http://" + addr.String()
}

// shadowStats is the part of the stats API this test reads.
type shadowStats struct {
	Total       uint64 `json:"requests"`
	Predictions struct {
		Compared  uint64   `json:"compared"`
		Agreement *float64 `json:"agreement"`
	} `json:"predictions"`
	Labels struct {
		N        uint64 `json:"n"`
		Champion struct {
			Accuracy *float64 `json:"accuracy"`
		} `json:"champion"`
		Shadow struct {
			Accuracy *float64 `json:"accuracy"`
		} `json:"shadow"`
	} `json:"labels"`
}

// waitStats polls the aggregator's stats API until the candidate has n compared and n labeled
// requests.
func waitStats(ctx context.Context, t *testing.T, api, experiment string, n uint64) shadowStats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last shadowStats
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/v1/experiments/"+experiment+"/stats?from=1h", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body struct {
				Shadows []struct {
					Stats shadowStats `json:"stats"`
				} `json:"shadows"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			_ = resp.Body.Close()
			if err == nil && len(body.Shadows) == 1 {
				last = body.Shadows[0].Stats
				if last.Predictions.Compared >= n && last.Labels.N >= n {
					return last
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("stats never reached %d compared and labeled requests: %+v", n, last)
	return last
}

// counters returns the values of a metric family by one label.
func counters(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

func sumValues(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ptr(v float64) *float64 { return &v }

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
