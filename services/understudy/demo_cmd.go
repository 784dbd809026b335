package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	aggregator "github.com/understudy-ml/understudy/services/aggregator/app"
	"github.com/understudy-ml/understudy/services/platform/flagenv"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
	"github.com/understudy-ml/understudy/services/platform/topics"
	"github.com/understudy-ml/understudy/services/understudy/demo"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
)

type demoConfig struct {
	Duration    time.Duration
	Rate        int
	Brokers     string
	DatabaseURL string
	DataDir     string
	Partitions  int
	Experiment  string
	Verbose     bool
}

func (c *demoConfig) validate() error {
	var errs []error
	if c.Duration <= 0 {
		errs = append(errs, errors.New("duration: must be positive"))
	}
	if c.Rate < 1 {
		errs = append(errs, errors.New("rate: must be at least 1"))
	}
	if c.Partitions < 1 {
		errs = append(errs, errors.New("partitions: must be at least 1"))
	}
	if c.Experiment == "" {
		errs = append(errs, errors.New("experiment: required"))
	}
	return errors.Join(errs...)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := demoConfig{Duration: 15 * time.Second, Rate: 100, DataDir: ".demo", Partitions: 4, Experiment: "fraud-v7"}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to send traffic")
	fs.IntVar(&c.Rate, "rate", c.Rate, "requests per second")
	fs.StringVar(&c.Brokers, "brokers", c.Brokers, "use this Kafka instead of the embedded broker")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "use this Postgres instead of a throwaway cluster")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "where the embedded broker keeps its data (cleared at start)")
	fs.IntVar(&c.Partitions, "partitions", c.Partitions, "partitions of every topic")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "experiment name")
	fs.BoolVar(&c.Verbose, "verbose", c.Verbose, "print the services' logs")
	if err := flagenv.Parse(fs, "demo", args, flagenv.LookupEnv); err != nil {
		return 2
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(stderr, "understudy demo: invalid flags:\n%v\n", err)
		return 2
	}
	if err := demoRun(ctx, c, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "understudy demo:", err)
		return 1
	}
	return 0
}

func demoRun(ctx context.Context, c demoConfig, stdout, stderr io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(stderr, "• "+format+"\n", args...) }
	logger := slog.New(slog.DiscardHandler)
	if c.Verbose {
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if c.Brokers == "" {
		dir := filepath.Join(c.DataDir, "kafka")
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clear %s: %w", dir, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		defer cluster.Close()
		c.Brokers = strings.Join(cluster.ListenAddrs(), ",")
		say("embedded Kafka (kfake) at %s, data in %s", c.Brokers, dir)
	}
	if c.DatabaseURL == "" {
		pg, stop, err := pgrun.StartTemp(ctx)
		if err != nil {
			return fmt.Errorf("throwaway postgres: %w", err)
		}
		defer func() { _ = stop() }()
		c.DatabaseURL = pg.URL
		say("throwaway PostgreSQL at 127.0.0.1:%d", pg.Port)
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(c.Brokers, ",")...))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer admin.Close()
	tc := topics.NewDefaultConfig()
	tc.Partitions = c.Partitions
	if _, err := topics.Ensure(ctx, admin, tc, topics.Understudy(tc)); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	champion, candidate := demo.Champion(), demo.Candidate()
	championURL, stopChampion, err := serve(champion)
	if err != nil {
		return err
	}
	defer stopChampion()
	candidateURL, stopCandidate, err := serve(candidate)
	if err != nil {
		return err
	}
	defer stopCandidate()
	say("champion %s v%s at %s; candidate v%s at %s (slower by %s, drifted where feature 0 > %.0f)",
		champion.Name, champion.Version, championURL, candidate.Version, candidateURL, candidate.Delay, candidate.DriftAbove)

	p, err := pipeline.Start(ctx, pipeline.Options{
		Brokers: c.Brokers, DatabaseURL: c.DatabaseURL, Experiment: c.Experiment,
		ChampionURL: championURL, ShadowURL: candidateURL, JoinWindow: 10 * time.Second, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer func() { _ = p.Stop() }()
	say("tap listening at %s; services: %s", p.ProxyURL, opsList(p.OpsURLs))

	n := int(c.Duration.Seconds() * float64(c.Rate))
	say("sending %d requests at %d/s through the tap", n, c.Rate)
	db, err := pgxpool.New(ctx, c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer db.Close()
	lastPrint := time.Now()
	res := demo.Traffic(ctx, p.ProxyURL, champion.Name, uint64(time.Now().Unix()), n, c.Rate, 16, champion, func(r demo.Result) {
		if time.Since(lastPrint) > 500*time.Millisecond {
			lastPrint = time.Now()
			fmt.Fprintf(stderr, "\r  requests %6d/%d  comparisons %6d", r.Sent, n, total(ctx, db, c.Experiment))
		}
	})
	fmt.Fprintln(stderr)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	say("waiting for every comparison to reach Postgres")
	deadline := time.Now().Add(60 * time.Second)
	for total(ctx, db, c.Experiment) < res.Sent && time.Now().Before(deadline) && ctx.Err() == nil {
		fmt.Fprintf(stderr, "\r  comparisons %6d/%d", total(ctx, db, c.Experiment), res.Sent)
		time.Sleep(250 * time.Millisecond)
	}
	fmt.Fprintln(stderr)
	counts, err := aggregator.Counts(ctx, db, c.Experiment)
	if err != nil {
		return err
	}
	stats, err := readComparisons(ctx, c.Brokers, int(res.Sent))
	if err != nil {
		return err
	}
	printSummary(stdout, c, res, counts, stats)
	if sum(counts) != res.Sent || res.Mismatched > 0 {
		return fmt.Errorf("pipeline lost or changed data: %d requests, %d comparisons, %d mismatched answers", res.Sent, sum(counts), res.Mismatched)
	}
	return nil
}

func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("model server: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func opsList(urls map[string]string) string {
	var parts []string
	for name, u := range urls {
		parts = append(parts, name+"="+u)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func total(ctx context.Context, db *pgxpool.Pool, experiment string) int64 {
	counts, err := aggregator.Counts(ctx, db, experiment)
	if err != nil {
		return 0
	}
	return sum(counts)
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// comparisonStats are computed by the demo from the comparisons topic itself.
type comparisonStats struct {
	n, agree                       int
	meanAbsDiff                    float64
	championLatency, shadowLatency []time.Duration
}

func readComparisons(ctx context.Context, brokers string, want int) (comparisonStats, error) {
	var st comparisonStats
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return st, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(schemas.TopicComparisons),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return st, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var diffSum float64
	for st.n < want {
		fetches := cl.PollFetches(rctx)
		if rctx.Err() != nil {
			break
		}
		fetches.EachRecord(func(r *kgo.Record) {
			cmp, err := codecs.Comparison.Decode(ctx, r.Value)
			if err != nil {
				return
			}
			st.n++
			if cmp.Champion == nil || len(cmp.Shadows) == 0 {
				return
			}
			ch, sh := cmp.Champion, cmp.Shadows[0]
			st.championLatency = append(st.championLatency, ch.Latency)
			st.shadowLatency = append(st.shadowLatency, sh.Latency)
			if ch.Prediction.Kind == schemas.PredictionNumber && sh.Prediction.Kind == schemas.PredictionNumber {
				d := math.Abs(ch.Prediction.Number - sh.Prediction.Number)
				diffSum += d
				if (ch.Prediction.Number >= 0.5) == (sh.Prediction.Number >= 0.5) {
					st.agree++
				}
			}
		})
	}
	if len(st.championLatency) > 0 {
		st.meanAbsDiff = diffSum / float64(len(st.championLatency))
	}
	return st, nil
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

func printSummary(w io.Writer, c demoConfig, res demo.Result, counts map[string]int64, st comparisonStats) {
	fmt.Fprintf(w, "\nUnderstudy demo summary: experiment %s\n", c.Experiment)
	fmt.Fprintf(w, "  requests sent through the tap   %d in %s (%d answered 200, %d transport errors)\n", res.Sent, res.Elapsed.Round(time.Millisecond), res.OK, res.Failed)
	fmt.Fprintf(w, "  callers got the champion's bytes %d/%d\n", res.Sent-res.Mismatched-res.Failed, res.Sent)
	fmt.Fprintf(w, "  comparisons in Postgres          %d", sum(counts))
	for _, s := range []string{schemas.StatusComplete, schemas.StatusShadowError, schemas.StatusShadowMissing, schemas.StatusChampionMissing} {
		if counts[s] > 0 {
			fmt.Fprintf(w, "  %s=%d", s, counts[s])
		}
	}
	fmt.Fprintln(w)
	if len(st.championLatency) > 0 {
		fmt.Fprintf(w, "  decision agreement (score ≥ 0.5) %.1f%% of %d joined requests\n", 100*float64(st.agree)/float64(len(st.championLatency)), len(st.championLatency))
		fmt.Fprintf(w, "  mean |candidate − champion|      %.4f\n", st.meanAbsDiff)
		fmt.Fprintf(w, "  latency p50/p95  champion %s / %s   candidate %s / %s\n",
			quantile(st.championLatency, 0.5), quantile(st.championLatency, 0.95), quantile(st.shadowLatency, 0.5), quantile(st.shadowLatency, 0.95))
	}
}
