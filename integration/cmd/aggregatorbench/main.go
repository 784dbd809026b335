// Command aggregatorbench measures the aggregator against a real Kafka broker and Postgres on
// this machine: comparisons (one candidate and one noise-baseline shadow; every tenth record a
// labeled comparison) are produced at a constant rate with live event times for a while; the
// aggregator process folds them into 1-minute windows. It reports the Postgres rows written
// per minute (window rows by batches, rollup rows, and every row Postgres saw inserted or
// updated in the windows table), the aggregator's CPU seconds per 1,000 comparisons, its peak
// RSS, and how far behind it ended. Run it with scripts/bench-aggregator.sh, which also runs
// the fold and PSI/KS micro-benchmarks and writes a Markdown results file.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

func main() {
	rate := flag.Int("rate", 5000, "comparisons per second")
	duration := flag.Duration("duration", 2*time.Minute, "how long comparisons are produced")
	out := flag.String("out", "bench-results/aggregator-kafka.md", "results file (a Markdown table fragment)")
	keys := flag.Int("segment-keys", 3, "segment keys declared (headers k0, k1, ...), 0..8")
	values := flag.Int("segment-values", 20, "distinct values of each segment key in the traffic")
	flag.Parse()
	if err := run(*rate, *duration, *out, keys, values); err != nil {
		fmt.Fprintln(os.Stderr, "aggregatorbench:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "aggregatorbench: "+format+"\n", args...)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func run(rate int, duration time.Duration, out string, keys, values *int) error {
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "aggregatorbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bin, err := harness.BuildService(ctx, "aggregator", tmp)
	if err != nil {
		return err
	}
	step("starting Kafka and Postgres")
	kafka, err := harness.StartOwnKafka()
	if err != nil {
		return err
	}
	defer func() { _ = kafka.Stop() }()
	pg, stopPG, err := pgrun.StartTemp(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = stopPG() }()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(kafka.Brokers, ",")...), kgo.DefaultProduceTopic(schemas.TopicComparisons),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100000))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, schemas.TopicComparisons); err != nil {
		return err
	}
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, schemas.TopicDeadLetter); err != nil {
		return err
	}
	ops, err := freeAddr()
	if err != nil {
		return err
	}
	var exps strings.Builder
	exps.WriteString("experiments:\n  - name: bench\n    shadows:\n      - {name: cand, url: \"http://cand:1\"}\n      - {name: copy, url: \"http://copy:1\", role: noise_baseline}\n")
	if *keys > 0 {
		exps.WriteString("    segments:\n      keys:\n")
		for k := range *keys {
			fmt.Fprintf(&exps, "        - {name: k%d, header: X-K%d}\n", k, k)
		}
	}
	expFile := filepath.Join(tmp, "experiments.yaml")
	if err := os.WriteFile(expFile, []byte(exps.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, "--kafka.brokers="+kafka.Brokers, "--http.listen-addr="+ops, "--database.url="+pg.URL, "--experiments.file="+expFile)
	logf, err := os.Create(filepath.Join(tmp, "aggregator.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	metrics := "http://" + ops + "/metrics"
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get("http://" + ops + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || harness.Exited(cmd.Process.Pid) {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("aggregator not ready:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	db, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	tuplesOf := func(table string) int64 {
		var n int64
		_ = db.QueryRow(ctx, `SELECT coalesce(n_tup_ins + n_tup_upd + n_tup_del, 0) FROM pg_stat_user_tables WHERE relname = $1`, table).Scan(&n)
		return n
	}
	tuples := func() int64 { return tuplesOf("aggregator_windows") }
	examples := func() int64 { return tuplesOf("aggregator_examples") }
	body := []byte(`{"id":"0193a5c2-7e1f-7b3c-9d4e-000000000000","inputs":[{"name":"features","shape":[1,4],"datatype":"FP64","data":[0.123,-1.456,0.789,1.012]}]}`)
	answer := []byte(`{"model_name":"fraud","model_version":"6","outputs":[{"name":"score","shape":[1],"datatype":"FP64","data":[0.345678]}]}`)
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return err
	}

	step("producing %d comparisons/s for %s", rate, duration)
	cpu0, rows0, roll0, tup0 := harness.CPUSeconds(cmd.Process.Pid), harness.ScrapeMetric(metrics, "understudy_aggregator_window_rows_written_total"),
		harness.ScrapeMetric(metrics, "understudy_aggregator_rollups_written_total"), tuples()
	ex0 := examples()
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for time.Since(start) < duration {
		<-tick.C
		due := int(time.Since(start).Seconds()*float64(rate)) - sent
		for range due {
			now := time.Now()
			cp := r.Float64()
			c := schemas.Comparison{
				RequestID: "r" + strconv.Itoa(sent), Experiment: "bench", EventTime: now, EmittedAt: now, Status: schemas.StatusComplete,
				Champion: &schemas.Outcome{Name: "champ", Role: schemas.RoleChampion, Prediction: schemas.Number(cp), Latency: time.Duration(800+r.IntN(400)) * time.Microsecond},
				Shadows: []schemas.Outcome{
					{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Number(min(1, cp+0.05*r.NormFloat64())), Latency: time.Duration(1000+r.IntN(600)) * time.Microsecond},
					{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(cp), Latency: time.Duration(800+r.IntN(400)) * time.Microsecond},
				},
				RequestBody: body,
			}
			for k := range *keys {
				c.Segments = append(c.Segments, schemas.SegmentValue{Key: "k" + strconv.Itoa(k), Value: "v" + strconv.Itoa(r.IntN(*values))})
			}
			c.Champion.Body, c.Shadows[0].Body, c.Shadows[1].Body = answer, answer, answer
			if sent%10 == 0 {
				c.Label = &schemas.LabelValue{Value: schemas.Number(float64(r.IntN(2))), EventTime: now}
			}
			v, err := codecs.Comparison.Encode(nil, c)
			if err != nil {
				return err
			}
			cl.Produce(ctx, &kgo.Record{Key: []byte(c.RequestID), Value: v}, nil)
			sent++
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	elapsed := time.Since(start)
	// Wait until the aggregator has stored offsets for everything produced.
	ends, err := adm.ListEndOffsets(ctx, schemas.TopicComparisons)
	if err != nil {
		return err
	}
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	lagAtEnd := int64(-1)
	for deadline := time.Now().Add(5 * time.Minute); ; {
		stored, err := store.StoredOffsets(ctx, db, "understudy-aggregator")
		if err != nil {
			return err
		}
		var done int64
		for _, o := range stored[schemas.TopicComparisons] {
			done += o
		}
		if lagAtEnd < 0 {
			lagAtEnd = end - done
		}
		if done >= end {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("aggregator did not catch up (%d of %d)", done, end)
		}
		time.Sleep(50 * time.Millisecond)
	}
	drain := time.Since(start) - elapsed
	cpu := harness.CPUSeconds(cmd.Process.Pid) - cpu0
	minutes := elapsed.Minutes()
	rows := (harness.ScrapeMetric(metrics, "understudy_aggregator_window_rows_written_total") - rows0) / minutes
	rolls := (harness.ScrapeMetric(metrics, "understudy_aggregator_rollups_written_total") - roll0) / minutes
	txs := harness.ScrapeMetric(metrics, "understudy_aggregator_transactions_total") / minutes
	pgRows := float64(tuples()-tup0) / minutes
	exRows := float64(examples()-ex0) / minutes
	var kept, windows int64
	_ = db.QueryRow(ctx, `SELECT count(*), count(DISTINCT (shadow, window_start)) FROM aggregator_examples WHERE experiment = 'bench'`).Scan(&kept, &windows)
	rss := float64(harness.StatusKiB(cmd.Process.Pid, "VmHWM")) / 1024
	perK := cpu / float64(sent) * 1000
	step("%d comparisons in %s; window rows/min %.0f, rollup rows/min %.0f, Postgres tuples/min %.0f, transactions/min %.0f, CPU %.3f s per 1,000, peak RSS %.0f MiB, lag at end %d, drained in %s",
		sent, elapsed.Round(time.Millisecond), rows, rolls, pgRows, txs, perK, rss, lagAtEnd, drain.Round(time.Millisecond))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f := fmt.Sprintf(`| comparisons/s produced | %d for %s (%d in all, every tenth labeled, 2 shadows, request and answer bodies of about 130 bytes, `+fmt.Sprintf("%d segment keys of %d values each", *keys, *values)+`) |
| window rows written by batches | %.0f per minute |
| rollup rows (1h, 1d) recomputed | %.0f per minute |
| rows inserted or updated in aggregator_windows (pg_stat) | %.0f per minute (a row per comparison and shadow would be %d) |
| rows inserted, updated or deleted in aggregator_examples (pg_stat) | %.0f per minute |
| examples kept | %d in %d shadow windows (bound: 6 kinds × 5 per shadow window = %d) |
| Postgres transactions | %.0f per minute |
| aggregator CPU | %.3f s per 1,000 comparisons (%.1f %% of one core) |
| aggregator peak RSS | %.0f MiB |
| backlog when production stopped | %d records, drained in %s |
`, rate, duration, sent, rows, rolls, pgRows, rate*60*2, exRows, kept, windows, windows*30, txs, perK, cpu/elapsed.Seconds()*100, rss, lagAtEnd, drain.Round(time.Millisecond))
	return os.WriteFile(out, []byte(f), 0o644)
}
