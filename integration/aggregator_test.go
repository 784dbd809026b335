package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/store"
)

// comparisonFor returns a final comparison of experiment with a candidate and a noise-baseline
// shadow; the candidate's predictions are shifted by shift.
func comparisonFor(r *rand.Rand, experiment, id string, at time.Time, shift float64) schemas.Comparison {
	cp := r.NormFloat64()
	return schemas.Comparison{
		RequestID: id, Experiment: experiment, EventTime: at, Status: schemas.StatusComplete, EmittedAt: at,
		Champion: &schemas.Outcome{Name: "champ", Role: schemas.RoleChampion, Prediction: schemas.Number(cp), Latency: time.Duration(900+r.IntN(300)) * time.Microsecond},
		Shadows: []schemas.Outcome{
			{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Number(r.NormFloat64() + shift), Latency: time.Duration(1200+r.IntN(300)) * time.Microsecond},
			{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(r.NormFloat64()), Latency: time.Duration(900+r.IntN(300)) * time.Microsecond},
		},
	}
}

func produceComparisons(ctx context.Context, t *testing.T, cl *kgo.Client, cs []schemas.Comparison) {
	t.Helper()
	if err := produceComparisonsErr(ctx, cl, cs); err != nil {
		t.Fatal(err)
	}
}

func produceComparisonsErr(ctx context.Context, cl *kgo.Client, cs []schemas.Comparison) error {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return err
	}
	rs := make([]*kgo.Record, 0, len(cs))
	for _, c := range cs {
		v, err := codecs.Comparison.Encode(nil, c)
		if err != nil {
			return err
		}
		rs = append(rs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
	}
	return cl.ProduceSync(ctx, rs...).FirstErr()
}

// storedTotal is the sum of the stored next offsets of group over the comparisons topic.
func storedTotal(ctx context.Context, t *testing.T, db *pgxpool.Pool, group string) int64 {
	t.Helper()
	stored, err := store.StoredOffsets(ctx, db, group)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range stored[schemas.TopicComparisons] {
		n += o
	}
	return n
}

// TestAggregatorSIGKILLTwoReplicasAndReplay: two aggregator processes share a group while
// 48,000 comparisons (8,000 of them labeled) arrive; each is SIGKILLed once mid-stream and
// restarted. Afterwards every window level counts each comparison exactly once. Rewinding
// the group's Kafka offsets to the start and restarting (a replay) changes nothing.
func TestAggregatorSIGKILLTwoReplicasAndReplay(t *testing.T) {
	ctx := context.Background()
	const experiment, group, finals, labeled = "agg-kill", "agg-kill", 40000, 8000
	dbURL := ownDatabase(ctx, t, "agg_kill")
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := store.Migrate(ctx, db); err != nil { // so that offsets can be polled before the first start
		t.Fatal(err)
	}
	start, logPath := serviceProcess(ctx, t, "aggregator", "--kafka.brokers="+broker.Brokers, "--http.listen-addr=127.0.0.1:0",
		"--database.url="+dbURL, "--kafka.group="+group, "--flush.interval=200ms", "--kafka.session-timeout=6s")
	// Static membership: a replica restarted with its id gets its partitions back at once.
	startA := func() *exec.Cmd { return start("--instance-id=a") }
	startB := func() *exec.Cmd { return start("--instance-id=b") }
	cl := clientFor(t, broker.Brokers)
	ensureTopics(ctx, t)

	r := rand.New(rand.NewPCG(11, 12))
	// 40 minutes of event time across an hour boundary, shuffled: every batch touches many windows.
	// All in the past: event times ahead of the aggregator's clock are dead-lettered.
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-20 * time.Minute)
	if t0.Add(40 * time.Minute).After(time.Now()) {
		t0 = t0.Add(-time.Hour)
	}
	var all []schemas.Comparison
	for i := range finals {
		c := comparisonFor(r, experiment, fmt.Sprint("k", i), t0.Add(time.Duration(i)*60*time.Millisecond), 0.3)
		all = append(all, c)
	}
	for i := 0; i < labeled; i++ {
		c := all[i*finals/labeled]
		c.Label = &schemas.LabelValue{Value: schemas.Number(float64(i % 2)), EventTime: c.EventTime}
		all = append(all, c)
	}
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	// Labeled comparisons after their final ones, as the joiner emits them.
	final, lab := all[:0:0], []schemas.Comparison{}
	for _, c := range all {
		if c.Label == nil {
			final = append(final, c)
		} else {
			lab = append(lab, c)
		}
	}
	all = append(final, lab...)

	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, schemas.TopicComparisons)
	if err != nil {
		t.Fatal(err)
	}
	var total int64 // what the group will have consumed at the end, about (markers aside)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	total += int64(len(all))
	produceComparisons(ctx, t, cl, all[:len(all)/3])
	a, b := startA(), startB()
	defer func() {
		for _, p := range []*exec.Cmd{a, b} {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}()
	produced := make(chan error, 1)
	go func() { produced <- produceComparisonsErr(ctx, cl, all[len(all)/3:]) }()
	// SIGKILL each replica once, at a third and at two thirds of the topic, restarting it.
	for i, p := range []**exec.Cmd{&a, &b} {
		restart := []func() *exec.Cmd{startA, startB}[i]
		target := int64(i+1) * total / 3
		deadline := time.Now().Add(90 * time.Second)
		for storedTotal(ctx, t, db, group) < target {
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(logPath)
				t.Fatalf("aggregators stalled below offset total %d\n%s", target, tail(string(out), 3000))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := (*p).Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, _ = (*p).Process.Wait()
		*p = restart()
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	_, last := readComparisonIDs(ctx, t, experiment)
	waitCaughtUp(ctx, t, db, group, last, logPath)

	check := func(when string) {
		t.Helper()
		st := store.New(db, group, store.DefaultLevels(time.Minute))
		ws, err := st.Range(ctx, experiment, t0.Add(-time.Hour), t0.Add(5*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for _, shadow := range []string{"cand", "copy"} {
			w := ws[shadow]
			if w == nil || w.Total != finals || w.Paired.N != labeled || w.Shadow.Latency.Count() != finals {
				t.Fatalf("%s: %s window %+v, want %d comparisons and %d labels", when, shadow, w, finals, labeled)
			}
		}
		// The base windows alone agree with the rollups.
		base, err := st.Series(ctx, experiment, "cand", time.Minute, t0.Add(-time.Hour), t0.Add(5*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, w := range base {
			n += w.Data.Total
		}
		if n != finals {
			t.Fatalf("%s: base windows count %d comparisons, want %d", when, n, finals)
		}
		counts, err := store.Counts(ctx, db, experiment)
		if err != nil || counts[schemas.StatusComplete] != finals || counts["labeled"] != labeled {
			t.Fatalf("%s: counts %v %v", when, counts, err)
		}
	}
	check("after two SIGKILLs")

	// Replay: stop both, rewind the group's Kafka offsets to the start, start one again.
	for _, p := range []*exec.Cmd{a, b} {
		_ = p.Process.Signal(syscall.SIGTERM)
		_, _ = p.Process.Wait()
	}
	adm := kadm.NewClient(cl)
	rewind := kadm.Offsets{}
	for p := range last {
		rewind.Add(kadm.Offset{Topic: schemas.TopicComparisons, Partition: p, At: 0, LeaderEpoch: -1})
	}
	if _, err := adm.CommitOffsets(ctx, group, rewind); err != nil {
		t.Fatal(err)
	}
	a = startA()
	b = a
	waitCaughtUp(ctx, t, db, group, last, logPath)
	time.Sleep(2 * time.Second) // a replaying replica would be writing by now
	check("after a replay from the start")
}

func waitCaughtUp(ctx context.Context, t *testing.T, db *pgxpool.Pool, group string, last map[int32]int64, logPath string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !caughtUp(ctx, t, db, group, last) {
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("aggregator never caught up with the comparisons topic\n%s", tail(string(out), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// receiverProcess starts scripts/webhook-receiver.py on a free port.
func receiverProcess(t *testing.T, secret, out string, failFor time.Duration) (url string, cmd *exec.Cmd) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command("python3", filepath.Join(root, "scripts", "webhook-receiver.py"), "--port", "0", "--secret", secret,
		"--out", out, "--fail-for", fmt.Sprint(failFor.Seconds()))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "listening on ") {
		t.Fatalf("receiver did not start: %q", sc.Text())
	}
	url = strings.TrimPrefix(sc.Text(), "listening on ")
	go func() {
		for sc.Scan() {
			t.Log("receiver:", sc.Text())
		}
	}()
	return url, cmd
}

type delivery struct {
	ID        string        `json:"id"`
	Duplicate bool          `json:"duplicate"`
	Payload   apiv1.Payload `json:"payload"`
}

func readDeliveries(t *testing.T, path, experiment string) []delivery {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []delivery
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var d delivery
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("delivery %q: %v", line, err)
		}
		if d.Payload.Data.Experiment == experiment {
			out = append(out, d)
		}
	}
	return out
}

// TestAggregatorWebhooksThroughOutage: live traffic drifts, recovers and drifts again, so a
// PSI rule fires and resolves repeatedly, while the sample receiver answers 500 for its first
// 60 s and the aggregator is SIGKILLed and restarted in the middle. Once the receiver
// recovers, it has every firing and resolved transition recorded in Postgres exactly once
// after deduplication by webhook-id, and nothing else. The receiver rejects a delivery with a
// bad signature.
func TestAggregatorWebhooksThroughOutage(t *testing.T) {
	ctx := context.Background()
	const experiment, group = "agg-hooks", "agg-hooks"
	secret := "whsec_" + "dW5kZXJzdHVkeS1pbnRlZ3JhdGlvbi10ZXN0LWtleQ=="
	out := filepath.Join(t.TempDir(), "deliveries.jsonl")
	receiver, _ := receiverProcess(t, secret, out, 60*time.Second)
	receiverUp := time.Now().Add(60 * time.Second)

	dbURL := ownDatabase(ctx, t, "agg_hooks")
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, rules, `rules: [{name: psi, metric: psi, comparator: ">=", threshold: 0.2, min_samples: 200, for: 2, severity: critical}]`)
	start, logPath := serviceProcess(ctx, t, "aggregator", "--kafka.brokers="+broker.Brokers, "--http.listen-addr=127.0.0.1:0",
		"--database.url="+dbURL, "--kafka.group="+group, "--window=1s", "--flush.interval=200ms",
		"--alerts.rules-file="+rules, "--alerts.interval=1s", "--alerts.range=3s", "--alerts.delay=2s",
		"--webhook.url="+receiver, "--webhook.secret="+secret, "--webhook.backoff-min=500ms", "--webhook.backoff-max=4s", "--webhook.poll=200ms")
	cl := clientFor(t, broker.Brokers)
	ensureTopics(ctx, t)
	// Start reading where the topic ends now: earlier tests' comparisons are not this test's.
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, schemas.TopicComparisons)
	if err != nil {
		t.Fatal(err)
	}
	pre := map[string]map[int32]int64{schemas.TopicComparisons: {}}
	ends.Each(func(o kadm.ListedOffset) { pre[schemas.TopicComparisons][o.Partition] = o.Offset })
	seedOffsets(ctx, t, db, group, pre)

	agg := start()
	defer func() { _ = agg.Process.Kill(); _, _ = agg.Process.Wait() }()
	// 6 phases of about 5 s at 400 comparisons/s: drifted, aligned, drifted, aligned, ...
	r := rand.New(rand.NewPCG(21, 22))
	i := 0
	for phase := range 6 {
		shift := 0.0
		if phase%2 == 0 {
			shift = 1.5
		}
		for range 25 {
			batch := make([]schemas.Comparison, 0, 80)
			for range 80 {
				batch = append(batch, comparisonFor(r, experiment, fmt.Sprint("h", i), time.Now(), shift))
				i++
			}
			produceComparisons(ctx, t, cl, batch)
			time.Sleep(200 * time.Millisecond)
		}
		if phase == 3 { // mid-outage: notifications are queued, undelivered
			_ = agg.Process.Signal(syscall.SIGKILL)
			_, _ = agg.Process.Wait()
			agg = start()
		}
	}
	if time.Now().After(receiverUp) {
		t.Fatal("traffic outlasted the receiver's outage; the test would not prove retries")
	}
	// Let the last phase resolve, then wait for the outbox to drain past the outage.
	deadline := receiverUp.Add(60 * time.Second)
	for {
		var open int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		cs, err := alert.States(ctx, db, experiment, alert.StateFiring)
		if err != nil {
			t.Fatal(err)
		}
		if open == 0 && len(cs) == 0 && time.Now().After(receiverUp) {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("outbox not drained (%d open, %d firing)\n%s", open, len(cs), tail(string(b), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	hist, err := alert.History(ctx, db, experiment, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]alert.State{}
	firings := 0
	for _, h := range hist {
		if alert.Notifies(h.From, h.To) {
			want[alert.MessageID(h.Experiment, h.Shadow, h.Rule, h.ID, h.To)] = h.To
			if h.To == alert.StateFiring {
				firings++
			}
		}
		if h.Shadow != "cand" {
			t.Fatalf("alert on shadow %q (the noise baseline is never alerted on)", h.Shadow)
		}
	}
	if firings < 2 {
		t.Fatalf("%d firings in history %+v; the drift phases should fire at least twice", firings, hist)
	}
	got := map[string]int{}
	for _, d := range readDeliveries(t, out, experiment) {
		got[d.ID]++
		if st, ok := want[d.ID]; !ok || d.Payload.Data.State != st || d.Payload.Data.NoiseFloor == nil {
			t.Fatalf("unexpected delivery %+v", d)
		}
	}
	for id, st := range want {
		if got[id] == 0 {
			t.Fatalf("transition %s (%s) never delivered; got %v", id, st, got)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d distinct deliveries, want %d", len(got), len(want))
	}
	var retries float64
	if err := db.QueryRow(ctx, `SELECT coalesce(sum(attempts), 0) FROM webhook_outbox`).Scan(&retries); err != nil || retries <= float64(len(want)) {
		t.Fatalf("outbox attempts %v for %d messages: the outage caused no retries? %v", retries, len(want), err)
	}

	// A delivery signed with another secret is rejected and not recorded.
	body := []byte(`{"type":"alert.firing","data":{"experiment":"agg-hooks"}}`)
	other, _ := apiv1.ParseSecret("whsec_" + "b3RoZXItc2VjcmV0LW5vdC10aGUtcmVjZWl2ZXJzIQ==")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, receiver, strings.NewReader(string(body)))
	now := time.Now()
	req.Header.Set(apiv1.HeaderID, "msg_forged")
	req.Header.Set(apiv1.HeaderTimestamp, fmt.Sprint(now.Unix()))
	req.Header.Set(apiv1.HeaderSignature, apiv1.Sign("msg_forged", now, body, [][]byte{other}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery answered %d, want 401", resp.StatusCode)
	}
	for _, d := range readDeliveries(t, out, experiment) {
		if d.ID == "msg_forged" {
			t.Fatal("forged delivery recorded")
		}
	}
}

// seedOffsets stores next offsets for group, as if it had consumed the topic up to them.
func seedOffsets(ctx context.Context, t *testing.T, db *pgxpool.Pool, group string, next map[string]map[int32]int64) {
	t.Helper()
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	for topic, ps := range next {
		for p, o := range ps {
			if _, err := db.Exec(ctx, `INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, batch_first) VALUES ($1, $2, $3, $4, $4)`,
				group, topic, p, o); err != nil {
				t.Fatal(err)
			}
		}
	}
}
