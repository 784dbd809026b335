// Command decisionbench simulates shadow experiments through the production decision code:
// windows of sufficient statistics (multinomial latency and score bins, paired label and
// failure counts) are merged with window.Merge, judged by stats.Report and alert.Judge and
// turned into alert states by alert.Next, every look, as the aggregator's alert engine does.
//
// A/A runs (a candidate and a noise baseline answering like the champion: same latency, same
// accuracy though different on 4 % of requests, the same 5 % of requests rejected by every
// model) give the share with any FAIL or fired alert over 7 days of looks; the same runs are
// judged by the previous procedure (point estimates of each 10-minute range against the old
// default rules) and by fixed-horizon 95 % intervals against zero. Power runs give the share
// of worse candidates FAILed and the median number of requests until the decision. Run it
// with scripts/bench-decisions.sh; it writes a Markdown results file.
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

type params struct {
	runs, powerRuns int
	days            float64
	look            time.Duration
	rate            float64
	workers         int
}

func main() {
	var p params
	flag.IntVar(&p.runs, "runs", 1000, "A/A experiments")
	flag.IntVar(&p.powerRuns, "power-runs", 1000, "experiments per power case")
	flag.Float64Var(&p.days, "days", 7, "simulated days per experiment")
	flag.DurationVar(&p.look, "look", 10*time.Minute, "time between looks")
	flag.Float64Var(&p.rate, "rate", 10, "requests per second, every one labeled")
	flag.IntVar(&p.workers, "workers", runtime.GOMAXPROCS(0), "parallel experiments")
	out := flag.String("out", "bench-results/decisions.md", "results file")
	flag.Parse()
	if err := run(p, *out); err != nil {
		fmt.Fprintln(os.Stderr, "decisionbench:", err)
		os.Exit(1)
	}
}

// result is one experiment's outcome under each procedure.
type result struct {
	failLook     int    // first look with a FAIL verdict or a firing alert; 0: never
	failedRules  string // the rules failing then
	final        string // the verdict at the last look
	oldFailLook  int    // previous procedure: first look with a firing alert
	fixedFailAny bool   // fixed 95 % intervals against zero: any look excluding 0
}

func run(p params, out string) error {
	looks := int(math.Round(p.days * 24 * float64(time.Hour) / float64(p.look)))
	n := int(math.Round(p.rate * p.look.Seconds()))
	start := time.Now()
	w := newWorld()
	copyModel := model{latencyScale: 1, failOnly: w.champFail}
	cases := []struct {
		name string
		m    model
		runs int
	}{
		{"A/A: an exact copy as candidate", copyModel, p.runs},
		{"accuracy 1 point lower", model{latencyScale: 1, failOnly: w.champFail, accuracyDiff: -0.01}, p.powerRuns},
		{"p99 latency 20 % higher", model{latencyScale: 1.2, failOnly: w.champFail}, p.powerRuns},
		{"prediction PSI 0.2", model{latencyScale: 1, failOnly: w.champFail, topDecileAdd: psiShift(0.2)}, p.powerRuns},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Decisions under continuous monitoring\n\n")
	fmt.Fprintf(&b, "Command: `scripts/bench-decisions.sh` (`decisionbench -runs %d -power-runs %d -days %g -look %s -rate %g`), %s, %s, %d cores, Go %s.\n\n",
		p.runs, p.powerRuns, p.days, p.look, p.rate, time.Now().UTC().Format("2006-01-02"), runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "Each experiment: %d looks (every %s over %g days) at %g labeled requests/s (%d per look); default rules and decision (α = 0.05 over the rules, minimum 1 h); a noise-baseline copy beside the candidate.\n\n", looks, p.look, p.days, p.rate, n)
	for i, c := range cases {
		aa := i == 0
		res := simulateAll(p.workers, c.runs, looks, n, w, c.m, copyModel, aa, uint64(i+1)*1_000_003)
		fmt.Fprintf(&b, "## %s (%d runs)\n\n", c.name, c.runs)
		failed, final := 0, map[string]int{}
		var reqs []int
		ruleCount := map[string]int{}
		for _, r := range res {
			if r.failLook > 0 {
				failed++
				reqs = append(reqs, r.failLook*n)
				for _, name := range strings.Split(r.failedRules, ",") {
					ruleCount[name]++
				}
			}
			final[r.final]++
		}
		if aa {
			old, fixed := 0, 0
			for _, r := range res {
				if r.oldFailLook > 0 {
					old++
				}
				if r.fixedFailAny {
					fixed++
				}
			}
			fmt.Fprintf(&b, "| procedure | A/A runs with any FAIL or fired alert |\n|---|---|\n")
			fmt.Fprintf(&b, "| **confidence sequences, noise floor, Bonferroni (now)** | **%d / %d = %.1f %%** |\n", failed, c.runs, pct(failed, c.runs))
			fmt.Fprintf(&b, "| previous: point estimates of each 10-min range, old default rules | %d / %d = %.1f %% |\n", old, c.runs, pct(old, c.runs))
			fmt.Fprintf(&b, "| fixed-horizon 95 %% intervals (accuracy, error rate) against 0, cumulative | %d / %d = %.1f %% |\n\n", fixed, c.runs, pct(fixed, c.runs))
		} else {
			slices.Sort(reqs)
			med := 0
			if len(reqs) > 0 {
				med = reqs[len(reqs)/2]
			}
			fmt.Fprintf(&b, "FAILed: **%d / %d = %.1f %%**; median requests until the FAIL: **%d** (%s of traffic). Rules failing at the decision: %s.\n\n",
				failed, c.runs, pct(failed, c.runs), med, time.Duration(float64(med)/p.rate*float64(time.Second)).Round(time.Minute), formatCounts(ruleCount))
		}
		fmt.Fprintf(&b, "Verdict at the end: %s.\n\n", formatCounts(final))
		fmt.Fprintf(os.Stderr, "%s: %d/%d failed (%s elapsed)\n", c.name, failed, c.runs, time.Since(start).Round(time.Second))
	}
	fmt.Fprintf(&b, "Wall time: %s.\n", time.Since(start).Round(time.Second))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	fmt.Print(b.String())
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func simulateAll(workers, runs, looks, n int, w *world, cand, base model, aa bool, seed uint64) []result {
	res := make([]result, runs)
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				res[i] = simulate(rand.New(rand.NewPCG(seed, uint64(i))), looks, n, w, cand, base, aa)
			}
		})
	}
	for i := range runs {
		next <- i
	}
	close(next)
	wg.Wait()
	return res
}

// oldRules are the default rules before confidence sequences, judged on point estimates.
var oldRules = []alert.Rule{
	{Name: "psi_warning", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.1, MinSamples: 100, For: 2},
	{Name: "psi_critical", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.2, MinSamples: 100, For: 2},
	{Name: "ks", Metric: stats.MetricKS, Comparator: ">=", Threshold: 0.1, MinSamples: 1000, For: 2},
	{Name: "latency_p99_ratio", Metric: stats.MetricLatencyP99, Comparator: ">=", Threshold: 1.2, MinSamples: 100, For: 3},
	{Name: "error_rate_diff", Metric: stats.MetricErrorRateDiff, Comparator: ">=", Threshold: 0.01, MinSamples: 100, For: 2},
	{Name: "accuracy_diff", Metric: stats.MetricAccuracyDiff, Comparator: "<=", Threshold: -0.01, MinSamples: 500, For: 1},
}

func simulate(r *rand.Rand, looks, n int, w *world, cand, base model, aa bool) result {
	rules, decision := alert.DefaultRules(), alert.DefaultDecision()
	opts := stats.DefaultOptions()
	cum := map[string]*window.Window{"candidate": window.New(), "baseline": window.New()}
	type st struct {
		state  alert.State
		streak int
	}
	states, old := make([]st, len(rules)), make([]st, len(oldRules))
	var res result
	for look := 1; look <= looks; look++ {
		ci := w.look(r, n, cand, schemas.RoleCandidate)
		bi := w.look(r, n, base, schemas.RoleNoiseBaseline)
		w.vsBaseline(r, ci, n, cand, base)
		if aa && res.oldFailLook == 0 {
			// The previous procedure: this 10-minute range alone, point estimates.
			s := stats.Compute(ci, opts)
			for i, rule := range oldRules {
				v, samples, ok := s.Value(rule.Metric)
				old[i].state, old[i].streak = alert.Next(old[i].state, old[i].streak, rule, ok && samples >= rule.MinSamples && rule.Holds(v))
				if old[i].state == alert.StateFiring && res.oldFailLook == 0 {
					res.oldFailLook = look
				}
			}
		}
		_ = cum["candidate"].Merge(ci)
		_ = cum["baseline"].Merge(bi)
		var rep stats.ShadowReport
		for _, x := range stats.Report(cum, opts) {
			if x.Shadow == "candidate" {
				rep = x
			}
		}
		if aa && !res.fixedFailAny {
			res.fixedFailAny = fixedFails(rep.Stats, cum["candidate"])
		}
		// The engine's step: a rule's alert holds when it FAILs; then the verdict with the
		// alert states, as the API and report give it.
		j := alert.Judgement{Decision: decision, Observed: time.Duration(look) * 10 * time.Minute}
		v := alert.Judge(rules, rep, j)
		firing := map[string]bool{}
		anyFiring := false
		for i, rule := range rules {
			states[i].state, states[i].streak = alert.Next(states[i].state, states[i].streak, rule, v.Rules[i].Status == alert.StatusFail)
			if states[i].state == alert.StateFiring {
				firing[rule.Name], anyFiring = true, true
			}
		}
		j.Firing = firing
		v = alert.Judge(rules, rep, j)
		res.final = v.Status
		if (v.Status == alert.StatusFail || anyFiring) && res.failLook == 0 {
			res.failLook = look
			var names []string
			for i, rr := range v.Rules {
				if rr.Status == alert.StatusFail || firing[rules[i].Name] {
					names = append(names, rr.Rule)
				}
			}
			res.failedRules = strings.Join(names, ",")
			if !aa {
				return res
			}
		}
	}
	return res
}

// fixedFails reports whether a fixed-horizon 95 % interval on the cumulative paired accuracy
// or error-rate difference excludes 0 on the bad side.
func fixedFails(s stats.Stats, w *window.Window) bool {
	if d := s.Labels.Difference; d != nil && d.High != nil && *d.High < 0 {
		return true
	}
	pe := w.Errors
	if pe.N == 0 {
		return false
	}
	nf := float64(pe.N)
	d := (float64(pe.ShadowOnly) - float64(pe.ChampionOnly)) / nf
	se := math.Sqrt(max(0, (float64(pe.ShadowOnly+pe.ChampionOnly)/nf-d*d)/nf))
	return d-1.96*se > 0
}

// psiShift returns the probability mass to move into the top decile for a PSI of target
// against the champion's deciles.
func psiShift(target float64) float64 {
	lo, hi := 0.0, 0.9
	for range 60 {
		m := (lo + hi) / 2
		q := []float64{0.1*(1-m) + m}
		psi := (q[0] - 0.1) * math.Log(q[0]/0.1)
		other := 0.1 * (1 - m)
		psi += 9 * (other - 0.1) * math.Log(other/0.1)
		if psi < target {
			lo = m
		} else {
			hi = m
		}
	}
	return (lo + hi) / 2
}

func pct(a, b int) float64 { return 100 * float64(a) / float64(max(b, 1)) }

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
