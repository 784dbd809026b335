// Command tapbench measures what the tap adds to a champion's latency, side by side in one
// run: the same champion driven directly, through the tap (publishing to a real Kafka broker)
// and through nginx with proxy_pass plus mirror, at constant request rates (open loop, by
// vegeta's attacker) with 1 KB JSON bodies; "proxy-only" is the tap binary with capture off (sampling rate 0),
// which separates the cost of proxying from the cost of capturing. It then checks isolation: the tap with Kafka
// hard-stopped and with Kafka behind 500 ms of added latency. It writes a Markdown results
// file. Run it with scripts/bench-tap.sh.
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
	"sort"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
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
}

// tapEnv is the -tap-env flag.
var tapEnv *string

func main() {
	rates := flag.String("rates", "1000,5000", "constant request rates to measure")
	duration := flag.Duration("duration", 15*time.Second, "measured duration of each scenario")
	warmup := flag.Duration("warmup", 3*time.Second, "unmeasured warm-up before each scenario")
	isoRate := flag.Int("isolation-rate", 1000, "rate of the isolation scenarios (0: skip them)")
	out := flag.String("out", "bench-results/tap.md", "results file (Markdown; a .json file is written beside it)")
	tapEnv = flag.String("tap-env", "", "environment for the tap processes only, space-separated (e.g. \"GOMAXPROCS=1 GOGC=400\")")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the tap during its first scenario to this file")
	flag.Parse()
	if err := run(*rates, *duration, *warmup, *isoRate, *out, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "tapbench:", err)
		os.Exit(1)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func run(rateList string, duration, warmup time.Duration, isoRate int, out, profile string) error {
	root := repoRoot()
	tmp, err := os.MkdirTemp("", "tapbench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
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
	ports := freePorts(9)
	championPort, tapPort, opsPort, nginxPort, sinkPort, brokerPort, proxyPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
	bareTapPort, bareOpsPort := ports[7], ports[8]
	start := func(name string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(name, args...)
		if filepath.Base(name) == "tap" && *tapEnv != "" {
			// Runtime settings for the tap processes only (e.g. GOMAXPROCS=1 GOGC=400).
			cmd.Env = append(os.Environ(), strings.Fields(*tapEnv)...)
		}
		logf, _ := os.Create(filepath.Join(tmp, filepath.Base(name)+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return cmd, nil
	}

	champion, err := start(filepath.Join(tmp, "understudy"), "model", "--name=champion", fmt.Sprintf("--listen-addr=127.0.0.1:%d", championPort))
	if err != nil {
		return err
	}

	// Kafka advertises the latency proxy's port, so every client connection goes through it.
	delay := newLatencyProxy(fmt.Sprintf("127.0.0.1:%d", proxyPort), fmt.Sprintf("127.0.0.1:%d", brokerPort))
	defer delay.Close()
	kdir := filepath.Join(tmp, "kafka")
	kafka := func(verb string) error {
		cmd := exec.Command(filepath.Join(root, "scripts", "kafka.sh"), verb, kdir)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", brokerPort), fmt.Sprintf("KAFKA_ADVERTISED_PORT=%d", proxyPort))
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

	tap, err := start(filepath.Join(tmp, "tap"),
		fmt.Sprintf("--proxy.listen-addr=127.0.0.1:%d", tapPort), fmt.Sprintf("--http.listen-addr=127.0.0.1:%d", opsPort),
		fmt.Sprintf("--kafka.brokers=127.0.0.1:%d", brokerPort), fmt.Sprintf("--champion.url=http://127.0.0.1:%d", championPort),
		"--experiment=bench", "--capture.spool-dir="+filepath.Join(tmp, "spool"))
	if err != nil {
		return err
	}
	// The same binary with capture off (sampling rate 0): what proxying alone costs.
	bareTap, err := start(filepath.Join(tmp, "tap"),
		fmt.Sprintf("--proxy.listen-addr=127.0.0.1:%d", bareTapPort), fmt.Sprintf("--http.listen-addr=127.0.0.1:%d", bareOpsPort),
		fmt.Sprintf("--kafka.brokers=127.0.0.1:%d", brokerPort), fmt.Sprintf("--champion.url=http://127.0.0.1:%d", championPort),
		"--experiment=bench", "--sampling.rate=0")
	if err != nil {
		return err
	}
	nginxConf := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(nginxConf, []byte(fmt.Sprintf(nginxTemplate, tmp, nginxPort, championPort, sinkPort, sinkPort)), 0o644); err != nil {
		return err
	}
	nginx, err := start("nginx", "-c", nginxConf, "-p", tmp, "-g", "daemon off;")
	if err != nil {
		return err
	}
	targets := map[string]string{
		"direct":     fmt.Sprintf("http://127.0.0.1:%d", championPort),
		"tap":        fmt.Sprintf("http://127.0.0.1:%d", tapPort),
		"nginx":      fmt.Sprintf("http://127.0.0.1:%d", nginxPort),
		"proxy-only": fmt.Sprintf("http://127.0.0.1:%d", bareTapPort),
	}
	for name, base := range targets {
		if err := waitHTTP(base + "/v2/models/fraud/infer"); err != nil {
			return fmt.Errorf("%s never answered: %w", name, err)
		}
	}

	var results []result
	attack := func(scenario string, rate int) (result, error) {
		url := targets[strings.SplitN(scenario, " ", 2)[0]] + "/v2/models/fraud/infer"
		measure(url, rate, warmup) // warm connections and caches
		pid := map[string]int{"tap": tap.Process.Pid, "proxy-only": bareTap.Process.Pid, "nginx": nginx.Process.Pid}[strings.SplitN(scenario, " ", 2)[0]]
		before, championBefore := treeCPU(pid), treeCPU(champion.Process.Pid)
		if profile != "" && strings.HasPrefix(scenario, "tap") {
			go fetchProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", opsPort, int(duration.Seconds())-1), profile)
			profile = ""
		}
		r := measure(url, rate, duration)
		r.Scenario, r.Rate = scenario, rate
		if pid != 0 {
			r.ProxyCPU = (treeCPU(pid) - before) / float64(r.Requests) * 1000
		}
		r.ChampionCPU = (treeCPU(champion.Process.Pid) - championBefore) / float64(r.Requests) * 1000
		step("%-26s %5d rps: p50 %-9s p99 %-9s p99.9 %-9s errors %d", scenario, rate, r.P50, r.P99, r.P999, r.Errors)
		results = append(results, r)
		return r, nil
	}
	for _, s := range strings.Split(rateList, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("rate %q: %w", s, err)
		}
		for _, sc := range []string{"direct", "tap", "nginx", "proxy-only"} {
			if _, err := attack(sc, rate); err != nil {
				return err
			}
		}
	}
	if isoRate > 0 {
		if _, err := attack("tap (Kafka healthy)", isoRate); err != nil {
			return err
		}
		delay.Set(500 * time.Millisecond)
		if _, err := attack("tap (Kafka +500 ms)", isoRate); err != nil {
			return err
		}
		delay.Set(0)
		if err := kafka("kill"); err != nil {
			return err
		}
		if _, err := attack("tap (Kafka stopped)", isoRate); err != nil {
			return err
		}
		if err := kafka("start"); err != nil {
			return err
		}
	}
	return write(out, results, duration)
}

// measure drives url at a constant rate for d and returns exact latency quantiles.
func measure(url string, rate int, d time.Duration) result {
	body := oneKBody()
	targeter := vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost, URL: url, Body: body,
		Header: http.Header{"Content-Type": []string{"application/json"}},
	})
	attacker := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true), vegeta.Workers(32), vegeta.MaxWorkers(2000), vegeta.Connections(2000))
	var lat []time.Duration
	errs := 0
	for res := range attacker.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, d, "bench") {
		lat = append(lat, res.Latency)
		if res.Error != "" || res.Code < 200 || res.Code >= 300 {
			errs++
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return result{Requests: len(lat), Errors: errs, P50: q(0.5), P90: q(0.9), P99: q(0.99), P999: q(0.999)}
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

func write(out string, results []result, duration time.Duration) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	host, _ := os.Hostname()
	var b strings.Builder
	fmt.Fprintf(&b, "# Tap latency benchmark\n\nRun %s on %s (%d CPUs), %s per scenario after warm-up, 1 KB JSON bodies, constant rate (vegeta attacker, open loop). Latencies are exact quantiles of every request.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), duration)
	b.WriteString("| scenario | rate | requests | errors | p50 | p90 | p99 | p99.9 | proxy CPU s / 1,000 req | champion CPU s / 1,000 req |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		cpu := ""
		if r.ProxyCPU > 0 {
			cpu = fmt.Sprintf("%.3f", r.ProxyCPU)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s | %.3f |\n", r.Scenario, r.Rate, r.Requests, r.Errors, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), cpu, r.ChampionCPU)
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
error_log %[1]s/nginx-error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
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
