package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	aggregator "github.com/understudy-ml/understudy/services/aggregator/app"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
	"github.com/understudy-ml/understudy/services/platform/topics"
	"github.com/understudy-ml/understudy/services/understudy/demo"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
	"github.com/understudy-ml/understudy/services/understudy/report"
)

type demoConfig struct {
	Duration    time.Duration
	Rate        int
	Brokers     string
	DatabaseURL string
	DataDir     string
	Partitions  int
	Experiment  string
	Candidate   string
	Kind        string // which candidate: improved, copy or worse
	MinDuration time.Duration
	Verbose     bool
	Exit        bool
	LabelDelay  time.Duration
	ServiceTime time.Duration // median service time of every demo model
	Malformed   float64       // share of requests sent malformed
	Window      time.Duration
	Addr        string
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
	if c.Candidate == "" || c.Candidate == "champion-copy" {
		errs = append(errs, errors.New("candidate-name: required, and not champion-copy"))
	}
	switch c.Kind {
	case "improved", "copy", "worse":
	default:
		errs = append(errs, fmt.Errorf("candidate: %q is not improved, copy or worse", c.Kind))
	}
	if c.MinDuration < 0 {
		errs = append(errs, errors.New("min-duration: must not be negative"))
	}
	if c.Malformed < 0 || c.Malformed > 0.5 {
		errs = append(errs, errors.New("malformed: must be between 0 and 0.5"))
	}
	if c.ServiceTime < 0 {
		errs = append(errs, fmt.Errorf("service-time: must not be negative, got %s", c.ServiceTime))
	}
	if c.LabelDelay < 0 {
		errs = append(errs, errors.New("label-delay: must not be negative"))
	}
	if c.Window < time.Second || time.Hour%c.Window != 0 {
		errs = append(errs, errors.New("window: must be at least 1s and divide an hour"))
	}
	return errors.Join(errs...)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := demoConfig{
		Duration: time.Minute, Rate: 100, DataDir: ".demo", Partitions: 4, Experiment: "fraud-v7", Candidate: "candidate",
		Kind: "improved", MinDuration: time.Minute, LabelDelay: 10 * time.Second, ServiceTime: demo.ServiceTime, Window: 5 * time.Second, Addr: "127.0.0.1:9104",
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to send traffic")
	fs.IntVar(&c.Rate, "rate", c.Rate, "requests per second")
	fs.StringVar(&c.Brokers, "brokers", c.Brokers, "use this Kafka instead of the embedded broker")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "use this Postgres instead of a throwaway cluster")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "where the embedded broker keeps its data (cleared at start)")
	fs.IntVar(&c.Partitions, "partitions", c.Partitions, "partitions of every topic")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "experiment name")
	fs.StringVar(&c.Candidate, "candidate-name", c.Candidate, "the candidate shadow's name")
	fs.StringVar(&c.Kind, "candidate", c.Kind, "the candidate model: improved (more accurate, slower, drifted), copy (an exact copy of the champion: an A/A experiment) or worse (2 points less accurate, slower)")
	fs.DurationVar(&c.MinDuration, "min-duration", c.MinDuration, "observation time before the verdict may PASS (the decision's min_duration)")
	fs.DurationVar(&c.LabelDelay, "label-delay", c.LabelDelay, "labels arrive up to this long after their request (uniformly spread)")
	fs.DurationVar(&c.ServiceTime, "service-time", c.ServiceTime, "median service time of every demo model (log-normal, the same on every copy for the same request; the candidates' slowdowns scale it)")
	fs.Float64Var(&c.Malformed, "malformed", c.Malformed, "share of requests sent malformed (one feature missing): every model answers them 400, which is not the candidate's fault")
	fs.DurationVar(&c.Window, "window", c.Window, "the aggregator's window width (alerts are evaluated every window)")
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the aggregator's API and dashboard (port 0: any free port)")
	fs.BoolVar(&c.Exit, "exit", c.Exit, "exit after the report instead of serving the dashboard until Ctrl-C")
	fs.BoolVar(&c.Verbose, "verbose", c.Verbose, "print the services' logs")
	if !parseFlags(fs, "demo", args, stderr) {
		return 2
	}
	if err := c.validate(); err != nil {
		fmt.Fprintf(stderr, "understudy demo: invalid flags:\n%v\n", err)
		return 2
	}
	code := 0
	if err := demoRun(ctx, c, stdout, stderr, &code); err != nil {
		fmt.Fprintln(stderr, "understudy demo:", err)
		return 4
	}
	return code
}

// demoInfra starts the embedded broker and throwaway Postgres unless the config names real ones;
// stop releases what it started.
func demoInfra(ctx context.Context, c *demoConfig, say func(string, ...any)) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if c.Brokers == "" {
		dir := filepath.Join(c.DataDir, "kafka")
		if err := os.RemoveAll(dir); err != nil {
			return stop, fmt.Errorf("clear %s: %w", dir, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return stop, fmt.Errorf("data dir: %w", err)
		}
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
		if err != nil {
			return stop, fmt.Errorf("embedded broker: %w", err)
		}
		stops = append(stops, cluster.Close)
		c.Brokers = strings.Join(cluster.ListenAddrs(), ",")
		say("embedded Kafka (kfake) at %s, data in %s", c.Brokers, dir)
	}
	if c.DatabaseURL == "" {
		pg, stopPG, err := pgrun.StartTemp(ctx)
		if err != nil {
			return stop, fmt.Errorf("throwaway postgres: %w", err)
		}
		stops = append(stops, func() { _ = stopPG() })
		c.DatabaseURL = pg.URL
		say("throwaway PostgreSQL at 127.0.0.1:%d", pg.Port)
	}
	return stop, nil
}

// alertReceiver is the demo's webhook receiver: it verifies each delivery's signature and
// prints the alert.
type alertReceiver struct {
	secret [][]byte
	out    io.Writer
	seen   atomic.Int64
}

func (r *alertReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err := apiv1.Verify(req.Header, body, r.secret, 5*time.Minute, time.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var p apiv1.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	r.seen.Add(1)
	d := p.Data
	val := func(v *float64, none string) string {
		if v == nil {
			return none
		}
		return apiv1.FormatNumber(*v)
	}
	interval := " (threshold only)"
	if d.Interval.Low != nil || d.Interval.High != nil {
		interval = fmt.Sprintf(" [%s, %s]", val(d.Interval.Low, "−∞"), val(d.Interval.High, "+∞"))
	}
	fmt.Fprintf(r.out, "\n  ⚑ verified webhook %s: %s/%s %s %s = %s%s (noise floor %s, threshold %s %g)\n",
		req.Header.Get(apiv1.HeaderID), d.Experiment, d.Shadow, strings.ToUpper(string(d.State)), d.Rule.Name,
		val(d.Value, "–"), interval, val(d.NoiseFloor, "–"), d.Rule.Comparator, d.Rule.Threshold)
	w.WriteHeader(http.StatusNoContent)
}

// demoRun runs the demo; with --exit, *code is set to the report's exit code.
func demoRun(ctx context.Context, c demoConfig, stdout, stderr io.Writer, code *int) error {
	say := func(format string, args ...any) { fmt.Fprintf(stderr, "• "+format+"\n", args...) }
	logger := slog.New(slog.DiscardHandler)
	if c.Verbose {
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	// Resolve port 0, and fail early with advice when the address is taken.
	apiAddr, err := freeAddr(c.Addr)
	if err != nil {
		return fmt.Errorf("dashboard address %s: %w (pass --addr with another port, or 127.0.0.1:0 for any free one)", c.Addr, err)
	}
	stopInfra, err := demoInfra(ctx, &c, say)
	defer stopInfra()
	if err != nil {
		return err
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(c.Brokers, ",")...), kgo.DefaultProduceTopic(schemas.TopicLabels))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer admin.Close()
	tc := topics.NewDefaultConfig()
	tc.Partitions = c.Partitions
	if _, err := topics.Ensure(ctx, admin, tc, topics.Understudy(tc)); err != nil {
		return fmt.Errorf("topics: %w", err)
	}

	champion, candidate, noise := demo.Champion(), demo.Candidate(), demo.NoiseCopy()
	describe := fmt.Sprintf("candidate v%s (more accurate, %.0f %% slower, drifted where feature 0 > %.0f)", candidate.Version, 100*(candidate.Slowdown-1), candidate.DriftAbove)
	switch c.Kind {
	case "copy":
		candidate, describe = demo.Copy(), "candidate: an exact copy of the champion (an A/A experiment)"
	case "worse":
		candidate = demo.Worse()
		describe = fmt.Sprintf("candidate v%s (2 points less accurate, %.0f %% slower)", candidate.Version, 100*(candidate.Slowdown-1))
	}
	// Every model takes the same service time on the same request (median --service-time),
	// so an exact copy is exactly as fast and only a slowdown makes a model slower.
	for _, m := range []*demo.Model{champion, candidate, noise} {
		m.Service = c.ServiceTime
	}
	urls := map[string]string{}
	for name, m := range map[string]*demo.Model{"champion": champion, "candidate": candidate, "copy": noise} {
		u, stop, err := serve(m)
		if err != nil {
			return err
		}
		defer stop()
		urls[name] = u
	}
	say("models: champion %s v%s; %s; noise-baseline copy of the champion", champion.Name, champion.Version, describe)
	rulesFile := filepath.Join(c.DataDir, "alert-rules.yaml")
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return fmt.Errorf("alert rules: %w", err)
	}
	if err := os.WriteFile(rulesFile, fmt.Appendf(nil, "# The default rules; the demo may PASS after %s.\ndecision: {min_duration: %s}\n", c.MinDuration, c.MinDuration), 0o644); err != nil {
		return fmt.Errorf("alert rules: %w", err)
	}

	key := make([]byte, 24)
	_, _ = rand.Read(key)
	receiver := &alertReceiver{secret: [][]byte{key}, out: stderr}
	receiverURL, stopReceiver, err := serve(receiver)
	if err != nil {
		return err
	}
	defer stopReceiver()
	apiURL := "http://" + apiAddr
	p, err := pipeline.Start(ctx, pipeline.Options{
		Brokers: c.Brokers, DatabaseURL: c.DatabaseURL, Experiment: c.Experiment, ChampionURL: urls["champion"],
		Shadows: []pipeline.Shadow{
			{Name: c.Candidate, URL: urls["candidate"], Role: schemas.RoleCandidate},
			{Name: "champion-copy", URL: urls["copy"], Role: schemas.RoleNoiseBaseline},
		},
		JoinWindow: 10 * time.Second, CountWindow: c.Window, Logger: logger,
		Segments: demo.Segments(),
		Aggregator: func(ac *aggregator.Config) {
			ac.Ops.ListenAddr, ac.API.ExternalURL = apiAddr, apiURL
			ac.Alerts.Interval, ac.Alerts.Range, ac.Alerts.Delay = c.Window, 0, 15*time.Second
			ac.Alerts.RulesFile = rulesFile
			ac.RollupInterval = 10 * time.Second
			ac.Webhook.URL, ac.Webhook.Secret, ac.Webhook.Poll = receiverURL, "whsec_"+base64.StdEncoding.EncodeToString(key), 200*time.Millisecond
		},
	})
	if err != nil {
		return err
	}
	defer func() { _ = p.Stop() }()
	say("tap at %s; dashboard and API at %s/dashboard/; webhook receiver at %s", p.ProxyURL, apiURL, receiverURL)

	api := report.Client{Base: apiURL}
	seed := uint64(time.Now().Unix())
	n := int(c.Duration.Seconds() * float64(c.Rate))
	say("sending %d requests at %d/s through the tap; their labels follow within %s", n, c.Rate, c.LabelDelay)
	start := time.Now()
	var labels atomic.Int64
	labelsDone := make(chan error, 1)
	go func() { labelsDone <- sendLabels(ctx, admin, c, seed, n, start, &labels) }()
	progress := func(sent int64) {
		counts, _ := comparisons(ctx, api, c.Experiment)
		fmt.Fprintf(stderr, "\r  requests %6d/%d  comparisons %6d  labels sent %6d  labeled comparisons %6d  alerts %d ",
			sent, n, sum(counts)-counts["labeled"], labels.Load(), counts["labeled"], receiver.seen.Load())
	}
	lastPrint := time.Now()
	res := demo.Traffic(ctx, p.ProxyURL, champion.Name, seed, n, c.Rate, max(16, c.Rate/4), champion, func(r demo.Result) {
		if time.Since(lastPrint) > 500*time.Millisecond {
			lastPrint = time.Now()
			progress(r.Sent)
		}
	}, demo.WithMalformed(c.Malformed))
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err := <-labelsDone; err != nil {
		return err
	}
	// Wait for every comparison and labeled comparison to reach Postgres.
	deadline := time.Now().Add(90 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		counts, err := comparisons(ctx, api, c.Experiment)
		if err == nil && sum(counts)-counts["labeled"] >= res.Sent && counts["labeled"] >= labels.Load() {
			break
		}
		progress(res.Sent)
		time.Sleep(250 * time.Millisecond)
	}
	progress(res.Sent)
	fmt.Fprintln(stderr)
	counts, err := comparisons(ctx, api, c.Experiment)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nUnderstudy demo: experiment %s\n", c.Experiment)
	fmt.Fprintf(stdout, "  requests sent through the tap    %d in %s (%d answered 200, %d transport errors)\n", res.Sent, res.Elapsed.Round(time.Millisecond), res.OK, res.Failed)
	fmt.Fprintf(stdout, "  callers got the champion's bytes %d/%d\n", res.Sent-res.Mismatched-res.Failed, res.Sent)
	fmt.Fprintf(stdout, "  comparisons in Postgres          %d  %s\n", sum(counts)-counts["labeled"], statusList(counts))
	fmt.Fprintf(stdout, "  labeled comparisons              %d of %d labels sent\n", counts["labeled"], labels.Load())
	fmt.Fprintf(stdout, "  verified alert webhooks          %d\n\n", receiver.seen.Load())
	d, err := report.Fetch(ctx, api, c.Experiment, start.Add(-time.Minute), time.Now().Add(time.Minute))
	if err != nil {
		return err
	}
	if err := report.Write(stdout, d, "table"); err != nil {
		return err
	}
	if sum(counts)-counts["labeled"] != res.Sent || res.Mismatched > 0 {
		return fmt.Errorf("pipeline lost or changed data: %d requests, %d comparisons, %d mismatched answers", res.Sent, sum(counts)-counts["labeled"], res.Mismatched)
	}
	if c.Exit {
		*code = report.ExitCode(d, c.Candidate)
		return nil
	}
	fmt.Fprintf(stderr, "• dashboard: %s/dashboard/?range=15m  (same numbers: understudy report --api %s --experiment %s --from 15m). Ctrl-C to stop.\n", apiURL, apiURL, c.Experiment)
	failed := make(chan error, 1)
	go func() { failed <- p.Wait() }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		if err != nil {
			return fmt.Errorf("pipeline stopped: %w", err)
		}
		return nil
	}
}

// sendLabels produces the ground-truth label of each request to the labels topic, each a
// random delay (up to c.LabelDelay) after the request was due, in order of arrival.
func sendLabels(ctx context.Context, cl *kgo.Client, c demoConfig, seed uint64, n int, start time.Time, sent *atomic.Int64) error {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return err
	}
	type due struct {
		i  int
		at time.Time
	}
	ds := make([]due, n)
	for i := range n {
		delay := time.Duration(float64(c.LabelDelay) * float64((uint64(i)*2654435761+seed)%1000) / 1000)
		ds[i] = due{i, start.Add(time.Duration(float64(i)/float64(c.Rate)*float64(time.Second)) + delay)}
	}
	sort.Slice(ds, func(a, b int) bool { return ds[a].at.Before(ds[b].at) })
	for _, d := range ds {
		if w := time.Until(d.at); w > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(w):
			}
		}
		req := demo.NewRequest(seed, d.i)
		v, err := codecs.Label.Encode(nil, schemas.LabelEvent{RequestID: req.ID, Experiment: c.Experiment, Value: schemas.Number(demo.Label(seed, d.i)), EventTime: time.Now(), Source: "demo"})
		if err != nil {
			return err
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte(req.ID), Value: v}, func(_ *kgo.Record, err error) {
			if err == nil {
				sent.Add(1)
			}
		})
	}
	return cl.Flush(ctx)
}

func statusList(counts map[string]int64) string {
	var parts []string
	for _, s := range []string{schemas.StatusComplete, schemas.StatusShadowError, schemas.StatusShadowMissing, schemas.StatusChampionMissing} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, counts[s]))
		}
	}
	return strings.Join(parts, " ")
}

func freeAddr(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}

func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen for a local server: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// comparisons returns experiment's comparisons stored, by status, as the read API reports
// them (none before its first window).
func comparisons(ctx context.Context, api report.Client, experiment string) (map[string]int64, error) {
	var out apiv1.ExperimentsResponse
	if err := api.Get(ctx, "/api/v1/experiments", nil, &out); err != nil {
		return nil, err
	}
	for _, e := range out.Experiments {
		if e.Name == experiment {
			return e.Comparisons, nil
		}
	}
	return map[string]int64{}, nil
}
