// Command joinerbench measures the joiner's throughput on this machine against the real Kafka
// broker, side by side with the same join written with Kafka Streams (scripts/streams/
// JoinBench.java, exactly_once_v2, RocksDB stores), on the same broker and the same data, in
// one run: first the prediction join alone (inference + shadow topics), then with labels
// (plus the labels topic; the joiner's label state in a throwaway Postgres). Throughput is input
// records per second from the first committed offset to the last, read from each
// application's consumer-group offsets. Peak RSS of each process is reported too.
// Run it with scripts/bench-joiner.sh; it writes a Markdown results file.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

func main() {
	requests := flag.Int("requests", 200000, "requests: one inference event, one shadow result and one label each")
	partitions := flag.Int("partitions", 4, "partitions of every topic")
	threads := flag.String("streams", "1:100,2:100,2:1000", "Kafka Streams configurations to run: threads:commit-interval-ms, comma-separated (100 ms is its exactly-once default)")
	out := flag.String("out", "bench-results/joiner.md", "results file")
	flag.IntVar(&batch, "batch", 5000, "the joiner's --batch.max-records")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the joiner's run here (3 s, from 1.5 s after start)")
	flag.BoolVar(&profileLabels, "profile-labels", false, "profile the run with labels instead of the prediction join")
	flag.Parse()
	if err := run(*requests, *partitions, *threads, *out); err != nil {
		fmt.Fprintln(os.Stderr, "joinerbench:", err)
		os.Exit(1)
	}
}

var (
	cpuProfile    string
	profileLabels bool
	batch         int
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func step(format string, args ...any) { fmt.Fprintf(os.Stderr, "joinerbench: "+format+"\n", args...) }

type result struct {
	name    string
	records int64
	rate    float64
	rssMiB  float64
}

func run(requests, partitions int, threadList, out string) error {
	root := repoRoot()
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "joinerbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bin, err := harness.BuildService(ctx, "joiner", tmp)
	if err != nil {
		return err
	}
	libs := filepath.Join(root, "scripts", "streams", ".cache", "libs")
	if _, err := os.Stat(filepath.Join(libs, "kafka-streams-4.4.0.jar")); err != nil {
		step("fetching Kafka Streams from Maven Central")
		mvn := exec.Command("mvn", "-q", "-f", filepath.Join(root, "scripts", "streams", "pom.xml"), "dependency:copy-dependencies")
		mvn.Stdout, mvn.Stderr = os.Stderr, os.Stderr
		if err := mvn.Run(); err != nil {
			return fmt.Errorf("mvn: %w", err)
		}
	}
	kafka, err := harness.StartOwnKafka()
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer func() { _ = kafka.Stop() }()
	brokers := kafka.Brokers
	pg, stopPG, err := pgrun.StartTemp(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = stopPG() }()
	topics := exec.Command("go", "run", ".", "topics", "create", "--kafka.brokers="+brokers, "--topics.partitions="+strconv.Itoa(partitions))
	topics.Dir, topics.Stderr = filepath.Join(root, "services", "understudy"), os.Stderr
	if err := topics.Run(); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, "bench.streams-out"); err != nil {
		return fmt.Errorf("create streams output topic: %w", err)
	}
	step("producing %d requests (inference, shadow, label)", requests)
	start := time.Now()
	if err := produce(ctx, cl, requests); err != nil {
		return err
	}
	step("produced %d records in %s", 3*requests, time.Since(start).Round(time.Millisecond))

	var results []result
	variants := []struct {
		labels bool
		topics []string
	}{
		{false, []string{schemas.TopicInference, schemas.TopicShadow}},
		{true, []string{schemas.TopicInference, schemas.TopicShadow, schemas.TopicLabels}},
	}
	for i, v := range variants {
		suffix := "prediction join"
		if v.labels {
			suffix = "with labels"
		}
		group := fmt.Sprintf("bench-go-%d-%d", i, time.Now().UnixNano())
		ops := "127.0.0.1:19199"
		if cpuProfile != "" && v.labels == profileLabels {
			go profile("http://"+ops+"/debug/pprof/profile?seconds=3", cpuProfile)
		}
		cmd := exec.Command(bin, "--kafka.brokers="+brokers, "--http.listen-addr="+ops, "--http.pprof", "--kafka.group="+group, "--batch.max-records="+strconv.Itoa(batch),
			"--instance-id="+group, "--join.expected-shadows=candidate", "--database.url="+pg.URL,
			"--labels.enabled="+strconv.FormatBool(v.labels))
		r, err := measure(ctx, adm, cmd, group, v.topics, "Understudy joiner, "+suffix, "http://"+ops+"/metrics")
		if err != nil {
			return err
		}
		results = append(results, r)
		for _, conf := range strings.Split(threadList, ",") {
			th, commit, ok := strings.Cut(conf, ":")
			if conf == "" {
				continue
			}
			if !ok {
				commit = "100"
			}
			app := fmt.Sprintf("bench-streams-%d-%s-%s-%d", i, th, commit, time.Now().UnixNano())
			java := exec.Command("java", "-Xmx1g", "-cp", libs+"/*", filepath.Join(root, "scripts", "streams", "JoinBench.java"),
				brokers, app, th, strconv.FormatBool(v.labels), "bench.streams-out", filepath.Join(tmp, "streams-"+app), commit)
			r, err := measure(ctx, adm, java, app, v.topics, fmt.Sprintf("Kafka Streams (%s threads, commit every %s ms), %s", th, commit, suffix), "")
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	return report(out, requests, partitions, results)
}

// produce writes requests inference events, shadow results and labels with realistic bodies.
func produce(ctx context.Context, cl *kgo.Client, n int) error {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	reqBody := []byte(`{"id":"%s","inputs":[{"name":"features","shape":[1,12],"datatype":"FP32","data":[0.12,3.4,0.0,1.0,17.5,0.33,2.1,0.9,4.4,0.05,1.7,8.2]}]}`)
	respBody := []byte(`{"model_name":"fraud","model_version":"6","id":"%s","outputs":[{"name":"score","shape":[1],"datatype":"FP32","data":[0.8731]}]}`)
	var perr error
	for i := range n {
		id := fmt.Sprintf("req-%09d", i)
		at := now.Add(time.Duration(i) * time.Millisecond / 10)
		ev, err := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id, Experiment: "bench", Model: schemas.ModelRef{Name: "fraud", Version: "6"}, EventTime: at,
			Request:  schemas.HTTPRequest{Method: "POST", Path: "/v2/models/fraud/infer", ContentType: "application/json", Body: reqBody, OriginalSize: int64(len(reqBody))},
			Response: schemas.HTTPResponse{Status: 200, ContentType: "application/json", Body: respBody, OriginalSize: int64(len(respBody)), Prediction: schemas.Number(0.8731)},
			Latency:  900 * time.Microsecond,
		})
		if err != nil {
			return err
		}
		res, err := codecs.Shadow.Encode(nil, schemas.ShadowResult{
			RequestID: id, Experiment: "bench", Shadow: "candidate", Role: schemas.RoleCandidate, Model: schemas.ModelRef{Name: "fraud", Version: "7"},
			EventTime: at, CalledAt: at.Add(time.Millisecond),
			Response: schemas.HTTPResponse{Status: 200, ContentType: "application/json", Body: respBody, OriginalSize: int64(len(respBody)), Prediction: schemas.Number(0.91)},
			Latency:  1100 * time.Microsecond,
		})
		if err != nil {
			return err
		}
		lab, err := codecs.Label.Encode(nil, schemas.LabelEvent{RequestID: id, Experiment: "bench", Value: schemas.Number(1), EventTime: at.Add(time.Minute), Source: "chargebacks"})
		if err != nil {
			return err
		}
		key := []byte(id)
		cb := func(_ *kgo.Record, err error) {
			if err != nil && perr == nil {
				perr = err
			}
		}
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: key, Value: ev, Timestamp: at}, cb)
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicShadow, Key: key, Value: res, Timestamp: at.Add(time.Millisecond)}, cb)
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicLabels, Key: key, Value: lab, Timestamp: at.Add(time.Minute)}, cb)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return perr
}

// measure runs cmd until group has committed the end of every topic and returns its rate.
func measure(ctx context.Context, adm *kadm.Client, cmd *exec.Cmd, group string, topics []string, name, metrics string) (result, error) {
	step("running %s", name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return result{}, err
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var (
		firstAt, doneAt time.Time
		firstDone       int64
		peak            int64
	)
	deadline := time.Now().Add(10 * time.Minute)
	for doneAt.IsZero() {
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("%s: not done after 10 minutes\n%s", name, tail(stderr.String(), 3000))
		}
		if cmd.ProcessState != nil || harness.Exited(cmd.Process.Pid) {
			return result{}, fmt.Errorf("%s exited\n%s", name, tail(stderr.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
		peak = max(peak, harness.StatusKiB(cmd.Process.Pid, "VmHWM"))
		offs, err := adm.FetchOffsetsForTopics(ctx, group, topics...)
		if err != nil {
			continue
		}
		var done int64
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Err == nil && o.At > 0 {
				done += o.At
			}
		})
		now := time.Now()
		if firstAt.IsZero() && done > 0 {
			firstAt, firstDone = now, done
		}
		if done >= total {
			doneAt = now
		}
	}
	if metrics != "" {
		if resp, err := http.Get(metrics); err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "understudy_joiner_label_apply_seconds_sum") || strings.HasPrefix(line, "understudy_joiner_label_apply_seconds_count") ||
					strings.HasPrefix(line, "understudy_joiner_transactions_total") || strings.HasPrefix(line, "understudy_joiner_labels_total") ||
					strings.HasPrefix(line, "understudy_joiner_comparisons_total") {
					step("  %s", line)
				}
			}
		}
	}
	r := result{name: name, records: total - firstDone, rssMiB: float64(peak) / 1024}
	if d := doneAt.Sub(firstAt).Seconds(); d > 0 {
		r.rate = float64(r.records) / d
	}
	step("%s: %.0f records/s (%d records in %.1f s), peak RSS %.0f MiB", name, r.rate, r.records, doneAt.Sub(firstAt).Seconds(), r.rssMiB)
	return r, nil
}

// profile fetches a CPU profile once the joiner's ops server answers.
func profile(url, path string) {
	time.Sleep(1500 * time.Millisecond)
	resp, err := http.Get(url)
	if err != nil {
		step("profile: %v", err)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func report(out string, requests, partitions int, results []result) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Joiner benchmark\n\nRun %s on %s (%d CPUs); real Kafka 4.4 broker (KRaft, single node), %d partitions, %d requests (an inference event, a shadow result and a label each), produced before each run. Each application starts from the earliest offsets with its own group; throughput counts input records from its first committed offset to the last.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), partitions, requests)
	b.WriteString("| Application | Input records | Records/s | Peak RSS (MiB) |\n|---|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f |\n", r.name, r.records, r.rate, r.rssMiB)
	}
	best := map[bool]float64{}
	ours := map[bool]float64{}
	for _, r := range results {
		labels := strings.HasSuffix(r.name, "with labels")
		if strings.HasPrefix(r.name, "Kafka Streams") {
			best[labels] = max(best[labels], r.rate)
		} else {
			ours[labels] = r.rate
		}
	}
	b.WriteString("\n")
	for _, labels := range []bool{false, true} {
		what := "prediction join"
		if labels {
			what = "with labels"
		}
		if best[labels] > 0 {
			fmt.Fprintf(&b, "- %s: joiner / best Kafka Streams = **%.2fx**\n", what, ours[labels]/best[labels])
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	step("results in %s", out)
	return os.WriteFile(out, []byte(b.String()), 0o644)
}
