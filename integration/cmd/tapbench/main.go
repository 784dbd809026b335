// Command tapbench measures what the tap adds to a champion's latency, side by side in one
// run: the same champion driven directly, through the tap (publishing to a real Kafka broker)
// and through nginx with proxy_pass plus mirror, at constant request rates (open loop, by
// vegeta's attacker) with 1 KB JSON bodies. "proxy-only" is the tap binary with capture off
// (sampling rate 0), which separates the cost of proxying from the cost of capturing; -variant
// adds more taps (other flags, environment or binaries). It then checks isolation: the tap
// with Kafka hard-stopped and with Kafka behind 500 ms of added latency. The scenarios of a
// rate take turns in rounds, so that drift in a shared machine's load hits them alike. It
// reports latency quantiles and CPU seconds per 1,000 requests of the proxy, the champion
// and the broker, in a Markdown results file. Run it with scripts/bench-tap.sh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/understudy-ml/understudy/integration/harness"
)

type result struct {
	Scenario    string        `json:"scenario"`
	Rate        int           `json:"rate"`
	Requests    int           `json:"requests"`
	Errors      int           `json:"errors"`
	P50         time.Duration `json:"p50"`
	P90         time.Duration `json:"p90"`
	P99         time.Duration `json:"p99"`
	P999        time.Duration `json:"p999"`
	ProxyCPU    float64       `json:"proxy_cpu_seconds_per_1000,omitempty"`
	ChampionCPU float64       `json:"champion_cpu_seconds_per_1000"`
	KafkaCPU    float64       `json:"kafka_cpu_seconds_per_1000"`
}

// options are the command's flags.
type options struct {
	rates            string        // comma-separated constant rates
	duration, warmup time.Duration // measured time per scenario (split over rounds); warm-up per sample
	isoRate, rounds  int           // rate of the isolation scenarios (0: none); interleaved rounds
	out, profile     string        // results file; CPU profile file of the tap ("": none)
	tapEnv           string        // environment of every tap process
	kafkaNice        int           // niceness of the broker
	variants         variants      // extra taps
}

// variants is the repeatable -variant flag: extra taps measured beside the main one.
type variants []variant

type variant struct {
	name  string
	env   []string // for the process, e.g. GOMAXPROCS=1
	flags []string // extra tap flags, e.g. --engine=std
	bin   string   // another tap binary (e.g. built from another commit); empty: this tree's
}

func (v *variants) String() string { return fmt.Sprint(len(*v), " variants") }

// Set parses "name:ITEM ITEM...", where items starting with "--" are tap flags, "bin=PATH"
// names another tap binary and the others are environment variables.
func (v *variants) Set(s string) error {
	name, items, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(name, " ") {
		return fmt.Errorf("variant %q: want name:ITEM..., e.g. gmp1:GOMAXPROCS=1", s)
	}
	x := variant{name: name}
	for _, it := range strings.Fields(items) {
		if bin, ok := strings.CutPrefix(it, "bin="); ok {
			x.bin = bin
		} else if strings.HasPrefix(it, "--") {
			x.flags = append(x.flags, it)
		} else {
			x.env = append(x.env, it)
		}
	}
	*v = append(*v, x)
	return nil
}

func main() {
	var o options
	flag.StringVar(&o.rates, "rates", "1000,5000", "constant request rates to measure")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "measured duration of each scenario")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured warm-up before each scenario")
	flag.IntVar(&o.isoRate, "isolation-rate", 1000, "rate of the isolation scenarios (0: skip them)")
	flag.StringVar(&o.out, "out", "bench-results/tap.md", "results file (Markdown; a .json file is written beside it)")
	flag.StringVar(&o.tapEnv, "tap-env", "", "environment for the tap processes only, space-separated (e.g. \"GOMAXPROCS=1 GOGC=400\")")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the tap during its first scenario to this file")
	flag.IntVar(&o.kafkaNice, "kafka-nice", 19, "niceness of the broker: in production it runs on other machines; here it shares the two cores with the proxy, the champion and the load generator, and at 19 it takes only CPU they leave idle (0: equal footing)")
	flag.IntVar(&o.rounds, "rounds", 3, "scenarios of a rate take turns this many times, duration/rounds each, and their latencies are pooled")
	flag.Var(&o.variants, "variant", "also measure a tap variant, side by side: name:ITEM..., items starting with -- are tap flags, bin=PATH another tap binary, others environment (repeatable; e.g. gmp1:GOMAXPROCS=1)")
	flag.Parse()
	// At saturation the load generator opens a connection per outstanding request.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "tapbench: -rounds must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "tapbench:", err)
		os.Exit(1)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func run(o options) error {
	duration, warmup, isoRate, rounds, profile, vs := o.duration, o.warmup, o.isoRate, o.rounds, o.profile, o.variants
	root := repoRoot()
	tmp, err := os.MkdirTemp("", "tapbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	var procs []*exec.Cmd
	defer func() {
		// SIGTERM first: a SIGKILLed nginx master leaves its workers running.
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			t := time.AfterFunc(10*time.Second, func() { _ = p.Process.Kill() })
			_ = p.Wait()
			t.Stop()
		}
	}()
	step := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "tapbench: "+format+"\n", args...) }

	step("building binaries")
	for name, dir := range map[string]string{"tap": "services/tap", "understudy": "services/understudy"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(tmp, name), ".")
		cmd.Dir, cmd.Stderr = filepath.Join(root, dir), os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
	}
	ports := freePorts(12 + 2*len(vs))
	championPort, tapPort, opsPort, nginxPort, sinkPort, brokerPort, proxyPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
	bareTapPort, bareOpsPort := ports[7], ports[8]
	// The isolation tap alone reaches the broker through the latency proxy, via a second
	// listener: the other taps connect directly, so that no Kafka traffic passes through this
	// process, which also generates the load and times it.
	isoTapPort, isoOpsPort, proxiedPort := ports[9], ports[10], ports[11]
	startEnv := func(env []string, name string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(name, args...)
		if filepath.Base(name) == "tap" {
			// Runtime settings for the tap processes only (e.g. GOMAXPROCS=1 GOGC=400).
			cmd.Env = append(append(os.Environ(), strings.Fields(o.tapEnv)...), env...)
		}
		logf, _ := os.Create(filepath.Join(tmp, fmt.Sprintf("%s-%d.log", filepath.Base(name), len(procs))))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return cmd, nil
	}
	start := func(name string, args ...string) (*exec.Cmd, error) { return startEnv(nil, name, args...) }

	champion, err := start(filepath.Join(tmp, "understudy"), "model", "--name=champion", fmt.Sprintf("--listen-addr=127.0.0.1:%d", championPort))
	if err != nil {
		return err
	}

	// The broker's second listener advertises the latency proxy's port, so every connection
	// of a client that bootstraps through the proxy goes through it.
	delay := newLatencyProxy(fmt.Sprintf("127.0.0.1:%d", proxyPort), fmt.Sprintf("127.0.0.1:%d", proxiedPort))
	defer delay.Close()
	kdir := filepath.Join(tmp, "kafka")
	kafka := func(verb string) error {
		// The broker (and every JVM thread, which inherit it) runs at the given niceness.
		cmd := exec.Command("nice", "-n", strconv.Itoa(o.kafkaNice), filepath.Join(root, "scripts", "kafka.sh"), verb, kdir)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", brokerPort),
			fmt.Sprintf("KAFKA_PROXIED_PORT=%d", proxiedPort), fmt.Sprintf("KAFKA_PROXIED_ADVERTISED_PORT=%d", proxyPort))
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		return cmd.Run()
	}
	step("starting Kafka")
	if err := kafka("start"); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	defer func() { _ = kafka("stop") }()
	topicsCmd := exec.Command(filepath.Join(tmp, "understudy"), "topics", "create", fmt.Sprintf("--kafka.brokers=127.0.0.1:%d", brokerPort), "--topics.partitions=4")
	topicsCmd.Stderr = os.Stderr
	if err := topicsCmd.Run(); err != nil {
		return fmt.Errorf("topics: %w", err)
	}

	// startTap starts a tap binary on port (ops on ops) in front of the champion, producing
	// to the broker at kafkaPort; extra flags follow the common ones.
	startTap := func(env []string, bin string, port, ops, kafkaPort int, extra ...string) (*exec.Cmd, error) {
		args := []string{
			fmt.Sprintf("--proxy.listen-addr=127.0.0.1:%d", port), fmt.Sprintf("--http.listen-addr=127.0.0.1:%d", ops), "--http.pprof",
			fmt.Sprintf("--kafka.brokers=127.0.0.1:%d", kafkaPort), fmt.Sprintf("--champion.url=http://127.0.0.1:%d", championPort),
			"--experiment=bench",
		}
		return startEnv(env, bin, append(args, extra...)...)
	}
	tapBin := filepath.Join(tmp, "tap")
	tap, err := startTap(nil, tapBin, tapPort, opsPort, brokerPort, "--capture.spool-dir="+filepath.Join(tmp, "spool"))
	if err != nil {
		return err
	}
	// The same binary with capture off (sampling rate 0): what proxying alone costs.
	bareTap, err := startTap(nil, tapBin, bareTapPort, bareOpsPort, brokerPort, "--sampling.rate=0")
	if err != nil {
		return err
	}
	// The tap of the isolation scenarios, the only one behind the latency proxy.
	isoTap, err := startTap(nil, tapBin, isoTapPort, isoOpsPort, proxyPort, "--capture.spool-dir="+filepath.Join(tmp, "spool-iso"))
	if err != nil {
		return err
	}
	pids := map[string]int{"tap": tap.Process.Pid, "proxy-only": bareTap.Process.Pid, "tap-iso": isoTap.Process.Pid}
	scenarios := []string{"direct", "tap", "nginx", "proxy-only"}
	targets := map[string]string{}
	for i, v := range vs {
		port, ops := ports[12+2*i], ports[13+2*i]
		bin := tapBin
		if v.bin != "" {
			bin = v.bin
		}
		cmd, err := startTap(v.env, bin, port, ops, brokerPort, append([]string{"--capture.spool-dir=" + filepath.Join(tmp, "spool-"+v.name)}, v.flags...)...)
		if err != nil {
			return err
		}
		name := "tap[" + v.name + "]"
		pids[name], targets[name] = cmd.Process.Pid, fmt.Sprintf("http://127.0.0.1:%d", port)
		scenarios = append(scenarios, name)
	}
	nginxConf := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(nginxConf, []byte(fmt.Sprintf(nginxTemplate, tmp, nginxPort, championPort, sinkPort, sinkPort)), 0o644); err != nil {
		return err
	}
	nginx, err := start("nginx", "-c", nginxConf, "-p", tmp, "-g", "daemon off;")
	if err != nil {
		return err
	}
	pids["nginx"] = nginx.Process.Pid
	targets["direct"] = fmt.Sprintf("http://127.0.0.1:%d", championPort)
	targets["tap"] = fmt.Sprintf("http://127.0.0.1:%d", tapPort)
	targets["nginx"] = fmt.Sprintf("http://127.0.0.1:%d", nginxPort)
	targets["proxy-only"] = fmt.Sprintf("http://127.0.0.1:%d", bareTapPort)
	targets["tap-iso"] = fmt.Sprintf("http://127.0.0.1:%d", isoTapPort)
	for name, base := range targets {
		if err := waitHTTP(base + "/v2/models/fraud/infer"); err != nil {
			return fmt.Errorf("%s never answered: %w", name, err)
		}
	}

	// Kafka's JIT and the tap's connections warm up before anything is measured, so the
	// first capturing scenario does not pay for them.
	step("warming up Kafka through the tap")
	measure(targets["tap"]+"/v2/models/fraud/infer", 1000, 10*time.Second)

	var results []result
	// sample measures one scenario once: the latencies of every request, errors and CPU.
	type sample struct {
		lat                []time.Duration
		errs               int
		proxyCPU, champCPU float64
		kafkaCPU           float64
	}
	kafkaPid := func() int {
		b, _ := os.ReadFile(filepath.Join(kdir, "pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	// once measures target (a key of targets; its process is pids[target], if any).
	once := func(target string, rate int, d time.Duration) sample {
		url := targets[target] + "/v2/models/fraud/infer"
		measure(url, rate, warmup) // warm connections and caches
		pid := pids[target]
		before, championBefore, kafkaBefore := treeCPU(pid), treeCPU(champion.Process.Pid), treeCPU(kafkaPid())
		if profile != "" && strings.HasPrefix(target, "tap") {
			go fetchProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", opsPort, max(1, int(d.Seconds())-1)), profile)
			profile = ""
		}
		lat, errs := measure(url, rate, d)
		return sample{
			lat: lat, errs: errs, proxyCPU: treeCPU(pid) - before, champCPU: treeCPU(champion.Process.Pid) - championBefore,
			kafkaCPU: max(0, treeCPU(kafkaPid())-kafkaBefore),
		}
	}
	// summarize pools the samples of a scenario, which drove target, into one result.
	summarize := func(scenario, target string, rate int, ss []sample) result {
		var all []time.Duration
		r := result{Scenario: scenario, Rate: rate}
		var proxyCPU, champCPU, kafkaCPU float64
		for _, s := range ss {
			kafkaCPU += s.kafkaCPU
			all = append(all, s.lat...)
			r.Errors += s.errs
			proxyCPU += s.proxyCPU
			champCPU += s.champCPU
		}
		r.Requests = len(all)
		r.P50, r.P90, r.P99, r.P999 = quantiles(all)
		if pids[target] != 0 {
			r.ProxyCPU = proxyCPU / float64(r.Requests) * 1000
		}
		r.ChampionCPU = champCPU / float64(r.Requests) * 1000
		r.KafkaCPU = kafkaCPU / float64(r.Requests) * 1000
		step("%-26s %5d rps: p50 %-9s p99 %-9s p99.9 %-9s errors %d", scenario, rate, r.P50, r.P99, r.P999, r.Errors)
		return r
	}
	// The scenarios of a rate take turns, rounds times, each for duration/rounds, so that
	// drift in the machine's load affects them alike.
	per := duration / time.Duration(rounds)
	for _, s := range strings.Split(o.rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("rate %q: %w", s, err)
		}
		samples := map[string][]sample{}
		for range rounds {
			for _, sc := range scenarios {
				samples[sc] = append(samples[sc], once(sc, rate, per))
			}
		}
		for _, sc := range scenarios {
			results = append(results, summarize(sc, sc, rate, samples[sc]))
		}
	}
	if isoRate > 0 {
		// Healthy, slow and stopped Kafka take turns too. After each restart the tap's spool
		// drains and the broker warms up before the next round, so that neither replay nor a
		// cold JVM weighs on the healthy run.
		names := []string{"tap (Kafka healthy)", "tap (Kafka +500 ms)", "tap (Kafka stopped)"}
		samples := map[string][]sample{}
		metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", isoOpsPort)
		for range rounds {
			samples[names[0]] = append(samples[names[0]], once("tap-iso", isoRate, per))
			delay.Set(500 * time.Millisecond)
			samples[names[1]] = append(samples[names[1]], once("tap-iso", isoRate, per))
			delay.Set(0)
			if err := kafka("kill"); err != nil {
				return err
			}
			samples[names[2]] = append(samples[names[2]], once("tap-iso", isoRate, per))
			if err := kafka("start"); err != nil {
				return err
			}
			deadline := time.Now().Add(2 * time.Minute)
			for harness.ScrapeMetric(metrics, "understudy_events_spool_bytes") > 0 && time.Now().Before(deadline) {
				time.Sleep(500 * time.Millisecond)
			}
			// A restarted broker is a cold JVM again: warm it up like the first one, or the
			// next healthy round would pay for it.
			measure(targets["tap-iso"]+"/v2/models/fraud/infer", isoRate, 10*time.Second)
		}
		for _, name := range names {
			results = append(results, summarize(name, "tap-iso", isoRate, samples[name]))
		}
	}
	// Errors of nginx's are its own, not the tap's: show why they happened.
	if b, err := os.ReadFile(filepath.Join(tmp, "nginx-error.log")); err == nil && len(b) > 0 {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		step("nginx logged %d errors, the last: %s", len(lines), lines[len(lines)-1])
	}
	return write(o, results)
}

// measure drives url at a constant rate for d and returns every request's latency and the
// number of errors.
func measure(url string, rate int, d time.Duration) ([]time.Duration, int) {
	body := oneKBody()
	targeter := vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost, URL: url, Body: body,
		Header: http.Header{"Content-Type": []string{"application/json"}},
	})
	// Our own client, so that its connections can be closed afterwards: scenarios and rounds
	// must not pile up idle connections (and file descriptors) from earlier attacks.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2000, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	attacker := vegeta.NewAttacker(vegeta.Client(client), vegeta.Workers(32), vegeta.MaxWorkers(2000))
	var lat []time.Duration
	errs := 0
	for res := range attacker.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, d, "bench") {
		lat = append(lat, res.Latency)
		if res.Error != "" || res.Code < 200 || res.Code >= 300 {
			errs++
		}
	}
	return lat, errs
}

// quantiles returns the exact p50, p90, p99 and p99.9 of lat (sorting it).
func quantiles(lat []time.Duration) (p50, p90, p99, p999 time.Duration) {
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return q(0.5), q(0.9), q(0.99), q(0.999)
}

// oneKBody is an Open Inference Protocol request of 1,024 bytes.
func oneKBody() []byte {
	base := `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP64","data":[0.5,-1.25,0.75,2]}],"parameters":{"padding":"`
	end := `"}}`
	return []byte(base + strings.Repeat("x", 1024-len(base)-len(end)) + end)
}

// treeCPU returns the user+system CPU seconds of pid and its children (nginx's workers).
func treeCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	total := 0.0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		self, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSuffix(filepath.Dir(path), "/"), "/proc/"))
		fields := strings.Fields(string(b[i+2:]))
		ppid, _ := strconv.Atoi(fields[1])
		if self != pid && ppid != pid {
			continue
		}
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		total += (utime + stime) / 100 // USER_HZ is 100 on Linux
	}
	return total
}

func freePorts(n int) []int {
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Post(url, "application/json", strings.NewReader(string(oneKBody())))
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func write(o options, results []result) error {
	out := o.out
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	host, _ := os.Hostname()
	var b strings.Builder
	fmt.Fprintf(&b, "# Tap latency benchmark\n\nRun %s on %s (%d CPUs), %s per scenario in %d interleaved rounds (each after a warm-up), 1 KB JSON bodies, constant rate (vegeta attacker, open loop). Latencies are exact quantiles of every request of all rounds. The Kafka broker runs on the same cores at niceness %d.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), o.duration, o.rounds, o.kafkaNice)
	b.WriteString("| scenario | rate | requests | errors | p50 | p90 | p99 | p99.9 | proxy CPU s / 1,000 req | champion CPU s / 1,000 req | Kafka CPU s / 1,000 req |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		cpu := ""
		if r.ProxyCPU > 0 {
			cpu = fmt.Sprintf("%.3f", r.ProxyCPU)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s | %.3f | %.3f |\n", r.Scenario, r.Rate, r.Requests, r.Errors, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), cpu, r.ChampionCPU, r.KafkaCPU)
	}
	b.WriteString("\nAdded latency = scenario minus direct at the same rate, measured in this run.\n\n")
	byKey := map[string]result{}
	for _, r := range results {
		byKey[fmt.Sprint(r.Scenario, r.Rate)] = r
	}
	for _, r := range results {
		if r.Scenario != "direct" {
			continue
		}
		tap, ngx := byKey[fmt.Sprint("tap", r.Rate)], byKey[fmt.Sprint("nginx", r.Rate)]
		fmt.Fprintf(&b, "- %d rps: tap adds %s at p50 and %s at p99; nginx+mirror adds %s at p50 and %s at p99.\n",
			r.Rate, ms(tap.P50-r.P50), ms(tap.P99-r.P99), ms(ngx.P50-r.P50), ms(ngx.P99-r.P99))
	}
	if h, ok := byKey["tap (Kafka healthy)"+fmt.Sprint(results[len(results)-1].Rate)]; ok {
		for _, name := range []string{"tap (Kafka +500 ms)", "tap (Kafka stopped)"} {
			if r, ok := byKey[name+fmt.Sprint(h.Rate)]; ok {
				fmt.Fprintf(&b, "- %s: p99 %s vs %s healthy (%+.1f%%), %d errors.\n", name, ms(r.P99), ms(h.P99), 100*(float64(r.P99)/float64(h.P99)-1), r.Errors)
			}
		}
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(strings.TrimSuffix(out, filepath.Ext(out))+".json", js, 0o644); err != nil {
		return err
	}
	fmt.Fprint(os.Stdout, b.String())
	return nil
}

func fetchProfile(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tapbench: profile:", err)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

const nginxTemplate = `
worker_processes 1;
worker_rlimit_nofile 20000;
error_log %[1]s/nginx-error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_temp;
  proxy_temp_path %[1]s/proxy_temp;
  upstream champion { server 127.0.0.1:%[3]d; keepalive 256; }
  upstream sink { server 127.0.0.1:%[4]d; keepalive 256; }
  server {
    listen 127.0.0.1:%[2]d;
    location / {
      mirror /mirror;
      mirror_request_body on;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://champion;
    }
    location = /mirror {
      internal;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://sink$request_uri;
    }
  }
  server {
    listen 127.0.0.1:%[5]d;
    location / { return 204; }
  }
}
`
