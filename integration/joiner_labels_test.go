package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
)

// joinerRun is a joiner running in this process.
type joinerRun struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startJoiner(t *testing.T, cfg joiner.Config) *joinerRun {
	t.Helper()
	reg := prometheus.NewRegistry()
	j, err := joiner.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &joinerRun{reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- j.Run(ctx) }()
	// Never leave a joiner running after its test: it would keep joining (and emitting
	// comparisons for) whatever the next tests produce.
	t.Cleanup(func() { cancel() })
	return r
}

// startAtEnd commits the end of the joiner's inputs as group's offsets, so a new joiner group
// starts there: earlier tests' records (a backlog for a new group) are not its subject. A
// group still held by an earlier test's static members (they stay until their session times
// out) refuses the commit; it then starts where those members left off, and the log says so.
func startAtEnd(ctx context.Context, t *testing.T, group string) {
	t.Helper()
	adm := kadm.NewClient(newClient(t))
	ends, err := adm.ListEndOffsets(ctx, schemas.TopicInference, schemas.TopicShadow, schemas.TopicLabels)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.CommitOffsets(ctx, group, ends.Offsets())
	if err != nil {
		t.Fatal(err)
	}
	if err := committed.Error(); err != nil {
		t.Logf("group %s keeps its offsets (an earlier test's members still hold it): %v", group, err)
	}
}

func (r *joinerRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("joiner: %v", err)
	}
}

// metric returns the value of the counter or gauge whose label values include all of labels.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetValue()] = true
			}
			for _, l := range labels {
				if !have[l] {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// ownDatabase creates a database named name in the test cluster and returns its URL.
func ownDatabase(ctx context.Context, t *testing.T, name string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	db := strings.ReplaceAll(name, "-", "_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, db)
}

// waitMetric waits up to a minute for a metric to reach want, and fails if it passes it.
func waitMetric(t *testing.T, reg *prometheus.Registry, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for metric(t, reg, name, labels...) < want && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := metric(t, reg, name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// comparisonReader reads an experiment's comparisons (read_committed) from the start.
type comparisonReader struct {
	cl         *kgo.Client
	codecs     *schemas.Codecs
	experiment string
	final      map[string][]schemas.Comparison
	labeled    map[string][]schemas.Comparison
}

func newComparisonReader(t *testing.T, experiment string) *comparisonReader {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	return &comparisonReader{
		cl:     newClient(t, kgo.ConsumeTopics(schemas.TopicComparisons), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted())),
		codecs: codecs, experiment: experiment,
		final: map[string][]schemas.Comparison{}, labeled: map[string][]schemas.Comparison{},
	}
}

// until polls until cond holds or the timeout passes, then reads a little longer so that
// duplicates, if any, show up.
func (c *comparisonReader) until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: finals %d, labeled %d", what, len(c.final), len(c.labeled))
		}
		c.poll(500 * time.Millisecond)
	}
	c.poll(time.Second)
}

func (c *comparisonReader) poll(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c.cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
		cmp, err := c.codecs.Comparison.Decode(ctx, r.Value)
		if err != nil || cmp.Experiment != c.experiment {
			return
		}
		if cmp.Label != nil {
			c.labeled[cmp.RequestID] = append(c.labeled[cmp.RequestID], cmp)
		} else {
			c.final[cmp.RequestID] = append(c.final[cmp.RequestID], cmp)
		}
	})
}

// TestJoinerStatusesAndLabels covers, on the real broker and Postgres: every join status;
// out-of-order and duplicate inputs; labels before their predictions, after them, late,
// duplicated and orphaned; and a restart in the middle of the label window, with labels that
// arrive while the joiner is down.
func TestJoinerStatusesAndLabels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	exp := fmt.Sprintf("labels-%d", time.Now().UnixNano())
	codecs, _ := schemas.NewCodecs()
	prod := newClient(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	id := func(name string) string { return exp + "-" + name }
	send := func(topic, key string) func([]byte, error) {
		return func(v []byte, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	champion := func(name string) {
		send(schemas.TopicInference, id(name))(codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id(name), Experiment: exp, EventTime: now, Model: schemas.ModelRef{Name: "champ"},
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Label("fraud")},
		}))
	}
	shadow := func(name string, failed bool) {
		res := schemas.ShadowResult{
			RequestID: id(name), Experiment: exp, Shadow: "a", Role: schemas.RoleCandidate, EventTime: now,
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Label("ok")},
		}
		if failed {
			res.Response, res.Error = schemas.HTTPResponse{}, &schemas.Error{Kind: "timeout"}
		}
		send(schemas.TopicShadow, id(name))(codecs.Shadow.Encode(nil, res))
	}
	label := func(name string, after time.Duration) {
		send(schemas.TopicLabels, id(name))(codecs.Label.Encode(nil, schemas.LabelEvent{
			RequestID: id(name), Experiment: exp, Value: schemas.Label("fraud"), EventTime: now.Add(after), Source: "chargebacks",
		}))
	}
	cfg := joiner.NewDefaultConfig()
	cfg.Kafka.Brokers, cfg.Ops.ListenAddr = broker.Brokers, "127.0.0.1:0"
	cfg.Group, cfg.InstanceID, cfg.ExpectedShadows = exp, exp, "a"
	// Its own database: the 1 s label buckets this test needs cannot share tables with the
	// default 24 h buckets of other joiners (the joiner refuses to mix them).
	cfg.DatabaseURL, cfg.Window, cfg.Grace = ownDatabase(ctx, t, exp), 3*time.Second, 0
	cfg.LabelWindow, cfg.LabelBucket, cfg.RetainInterval = 20*time.Second, time.Second, time.Second
	cfg.MaxBatch = 50

	// Start at the end of the inputs: earlier tests' records (a backlog for a new group) are
	// not this test's subject, and under -race they would take minutes to join.
	startAtEnd(ctx, t, cfg.Group)
	j := startJoiner(t, cfg)
	// Labels before their predictions: "early" gets its label first.
	label("early", time.Second)
	shadow("ooo", false) // out of order: shadow first
	champion("ooo")
	champion("complete")
	shadow("complete", false)
	champion("dup")
	champion("dup")
	shadow("dup", false)
	shadow("dup", false)
	champion("nochamp-shadow-missing") // never gets its shadow
	shadow("champion-missing", false)  // never gets its champion
	champion("shadow-error")
	shadow("shadow-error", true)
	champion("early")
	shadow("early", false)
	champion("late")
	shadow("late", false)
	label("orphan", 0) // no request will ever have this id
	r := newComparisonReader(t, exp)
	r.until(t, time.Minute, "final comparisons", func() bool { return len(r.final) == 8 && len(r.labeled) == 1 })
	// Labels after their predictions, a duplicate label, and one past the 20 s label window.
	label("complete", 2*time.Second)
	label("dup", 3*time.Second)
	label("dup", 4*time.Second)
	label("late", 25*time.Second)
	r.until(t, time.Minute, "labeled comparisons", func() bool { return len(r.labeled) == 3 })
	waitMetric(t, j.reg, 1, "understudy_joiner_labels_total", exp, "late")

	// Restart in the middle of the label window; labels arrive while the joiner is down.
	j.stop(t)
	label("ooo", 5*time.Second)
	label("champion-missing", 5*time.Second)
	label("shadow-error", 5*time.Second)
	j = startJoiner(t, cfg)
	r.until(t, time.Minute, "labeled comparisons after restart", func() bool { return len(r.labeled) == 6 })
	waitMetric(t, j.reg, 1, "understudy_joiner_labels_total", exp, "orphaned")
	r.poll(2 * time.Second)

	want := map[string]string{
		"ooo": schemas.StatusComplete, "complete": schemas.StatusComplete, "dup": schemas.StatusComplete,
		"nochamp-shadow-missing": schemas.StatusShadowMissing, "champion-missing": schemas.StatusChampionMissing,
		"shadow-error": schemas.StatusShadowError, "early": schemas.StatusComplete, "late": schemas.StatusComplete,
	}
	for name, status := range want {
		got := r.final[id(name)]
		if len(got) != 1 || got[0].Status != status {
			t.Errorf("%s: final comparisons %+v, want one %s", name, got, status)
		}
	}
	wantLabeled := []string{"early", "complete", "dup", "ooo", "champion-missing", "shadow-error"}
	for _, name := range wantLabeled {
		got := r.labeled[id(name)]
		if len(got) != 1 || got[0].Status != want[name] || got[0].Label.Source != "chargebacks" || !got[0].Label.Value.Equal(schemas.Label("fraud")) {
			t.Errorf("%s: labeled comparisons %+v, want one with status %s", name, got, want[name])
		}
	}
	if len(r.final) != len(want) || len(r.labeled) != len(wantLabeled) {
		t.Errorf("%d final and %d labeled comparisons, want %d and %d", len(r.final), len(r.labeled), len(want), len(wantLabeled))
	}
	if d := r.labeled[id("dup")]; len(d) == 1 && !d[0].Label.EventTime.Equal(now.Add(3*time.Second)) {
		t.Errorf("duplicate label: the first one should win, got event time %v", d[0].Label.EventTime)
	}
}
