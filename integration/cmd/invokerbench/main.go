// Command invokerbench measures the invoker on this machine against the real Kafka broker:
// throughput against a fast local shadow (calls per second, from the first result to the
// last), and resident memory while a shadow 10x slower than the champion makes consumer lag
// grow. The invoker runs as its own process; the shadows are fasthttp servers in this one.
// Run it with scripts/bench-invoker.sh; it writes a Markdown results file.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/valyala/fasthttp"
)

func main() {
	events := flag.Int("events", 50000, "inference events for the throughput run")
	shadows := flag.Int("shadows", 2, "shadows per event in the throughput run")
	slowEvents := flag.Int("slow-events", 60000, "events for the slow-shadow memory run")
	slowLatency := flag.Duration("slow-latency", 5*time.Millisecond, "latency of the slow shadow (10x a 0.5 ms champion)")
	slowFor := flag.Duration("slow-for", 30*time.Second, "how long to watch memory under the slow shadow")
	out := flag.String("out", "bench-results/invoker.md", "results file")
	profile := flag.String("cpuprofile", "", "CPU profile of the invoker during the throughput run")
	flag.Parse()
	if err := run(*events, *shadows, *slowEvents, *slowLatency, *slowFor, *out, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "invokerbench:", err)
		os.Exit(1)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func step(format string, args ...any) { fmt.Fprintf(os.Stderr, "invokerbench: "+format+"\n", args...) }

func run(events, shadows, slowEvents int, slowLatency, slowFor time.Duration, out, profile string) error {
	root := repoRoot()
	tmp, err := os.MkdirTemp("", "invokerbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bin, err := harness.BuildService(context.Background(), "invoker", tmp)
	if err != nil {
		return err
	}
	kdir := filepath.Join(tmp, "kafka")
	kafka := exec.Command(filepath.Join(root, "scripts", "kafka.sh"), "start", kdir)
	kafka.Stderr = os.Stderr
	addr, err := kafka.Output()
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer func() { _ = exec.Command(filepath.Join(root, "scripts", "kafka.sh"), "stop", kdir).Run() }()
	brokers := strings.TrimSpace(string(addr))
	topics := exec.Command("go", "run", ".", "topics", "create", "--kafka.brokers="+brokers, "--topics.partitions=4")
	topics.Dir, topics.Stderr = filepath.Join(root, "services", "understudy"), os.Stderr
	if err := topics.Run(); err != nil {
		return fmt.Errorf("topics: %w", err)
	}

	fast := shadowServer(0)
	slow := shadowServer(slowLatency)
	var report strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&report, "# Invoker benchmark\n\nRun %s on %s (%d CPUs), real Kafka 4.4 broker, invoker as its own process, fasthttp shadows in the driver.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU())

	// Throughput.
	if events > 0 {
		exp := fmt.Sprintf("tput-%d", time.Now().UnixNano())
		step("producing %d events", events)
		if err := produce(brokers, exp, events); err != nil {
			return err
		}
		var yaml strings.Builder
		fmt.Fprintf(&yaml, "experiments:\n  - name: %s\n    shadows:\n", exp)
		for i := range shadows {
			fmt.Fprintf(&yaml, "      - {name: s%d, url: %s, max_in_flight: 128}\n", i, fast)
		}
		cmd, ops, err := startInvoker(tmp, bin, brokers, exp, yaml.String())
		if err != nil {
			return err
		}
		if profile != "" {
			go fetch(ops+"/debug/pprof/profile?seconds=8", profile)
		}
		want := float64(events * shadows)
		first, last := waitCalls(ops, want, 5*time.Minute)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		rate := want / last.Sub(first).Seconds()
		step("throughput: %.0f calls/s", rate)
		fmt.Fprintf(&report, "## Throughput against a fast local shadow\n\n%d events × %d shadows = %.0f calls, %d-event transactions: **%.0f calls/s** (%.0f events/s), from the first result to the last.\n\n",
			events, shadows, want, 2000, rate, rate/float64(shadows))
	}

	// Memory under a slow shadow.
	exp := fmt.Sprintf("slow-%d", time.Now().UnixNano())
	if err := produce(brokers, exp, slowEvents); err != nil {
		return err
	}
	cmd, ops, err := startInvoker(tmp, bin, brokers, exp, fmt.Sprintf("experiments:\n  - name: %s\n    shadows:\n      - {name: slow, url: %s, max_in_flight: 8, timeout: 1s}\n", exp, slow))
	if err != nil {
		return err
	}
	var maxRSS, minRSS int64
	var samples []string
	deadline := time.Now().Add(slowFor)
	for time.Now().Before(deadline) {
		rss := harness.StatusKiB(cmd.Process.Pid, "VmRSS")
		maxRSS = max(maxRSS, rss)
		if rss > 0 && (minRSS == 0 || rss < minRSS) && len(samples) > 2 {
			minRSS = rss
		}
		samples = append(samples, fmt.Sprintf("%.0f", float64(rss)/1024))
		time.Sleep(time.Second)
	}
	calls := harness.ScrapeMetric(ops+"/metrics", "understudy_invoker_calls_total")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	step("slow shadow: max RSS %.1f MiB, %.0f calls in %s", float64(maxRSS)/1024, calls, slowFor)
	fmt.Fprintf(&report, "## Memory under a shadow 10x slower than the champion\n\nShadow latency %s (10x a 0.5 ms champion), max_in_flight 8, %d events waiting when the invoker starts (consumer lag): %.0f calls in %s (%.0f/s, bounded by 8 / %s). Resident memory stays between %.0f and %.0f MiB while the lag is worked off: **max RSS %.1f MiB**. RSS each second (MiB): %s.\n",
		slowLatency, slowEvents, calls, slowFor, calls/slowFor.Seconds(), slowLatency, float64(minRSS)/1024, float64(maxRSS)/1024, float64(maxRSS)/1024, strings.Join(samples, " "))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	fmt.Print(report.String())
	return os.WriteFile(out, []byte(report.String()), 0o644)
}

func shadowServer(delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	body := []byte(`{"model_name":"s","outputs":[{"name":"p","shape":[1],"datatype":"FP64","data":[0.5]}]}`)
	go func() {
		_ = (&fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			if delay > 0 {
				time.Sleep(delay)
			}
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		}}).Serve(ln)
	}()
	return "http://" + ln.Addr().String()
}

func produce(brokers, exp string, n int) error {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic(schemas.TopicInference), kgo.ProducerLinger(10*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	body := []byte(`{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP64","data":[0.5,-1.25,0.75,2]}]}`)
	for i := range n {
		id := fmt.Sprintf("%s-%07d", exp, i)
		v, err := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id, Experiment: exp, EventTime: time.Now(),
			Request: schemas.HTTPRequest{Method: "POST", Path: "/v2/models/m/infer", ContentType: "application/json", Body: body},
		})
		if err != nil {
			return err
		}
		cl.Produce(context.Background(), &kgo.Record{Key: []byte(id), Value: v}, nil)
	}
	return cl.Flush(context.Background())
}

func startInvoker(tmp, bin, brokers, exp, yaml string) (*exec.Cmd, string, error) {
	file := filepath.Join(tmp, exp+".yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return nil, "", err
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	opsAddr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(bin, "--kafka.brokers="+brokers, "--http.listen-addr="+opsAddr, "--http.pprof", "--experiments.file="+file,
		"--instance-id="+exp, "--kafka.group="+exp)
	logf, _ := os.Create(filepath.Join(tmp, exp+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	return cmd, "http://" + opsAddr, nil
}

// waitCalls polls the invoker's call counter until it reaches want; it returns when the first
// and the last calls were seen.
func waitCalls(ops string, want float64, limit time.Duration) (first, last time.Time) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		n := harness.ScrapeMetric(ops+"/metrics", "understudy_invoker_calls_total")
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		if n >= want {
			return first, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return first, time.Now()
}

func fetch(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		return
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}
