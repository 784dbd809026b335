// Package report renders an experiment's statistics, as the aggregator's read API returns them,
// for people: champion vs each candidate shadow side by side, with the noise-baseline shadow's
// numbers as the noise floor, the alerts that fired in the range and a one-line verdict against
// the alert rules. `understudy report` and the demo print it; formats are an aligned text
// table, Markdown, and JSON (the API's own answer).
package report

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// Client reads the aggregator's read API.
type Client struct {
	Base  string // e.g. http://localhost:9104
	Token string // bearer token, if the API requires one
	HTTP  *http.Client
}

// Get decodes GET path (with query) into v.
func (c Client) Get(ctx context.Context, path string, query url.Values, v any) error {
	u := strings.TrimRight(c.Base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("aggregator API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("aggregator API %s: %s %s", path, resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Data is what a report shows.
type Data struct {
	Stats   apiv1.StatsResponse `json:"stats"`
	History []apiv1.Transition  `json:"alert_history"`
}

// Fetch reads the statistics of experiment over [from, to) and the alert transitions in it.
func Fetch(ctx context.Context, c Client, experiment string, from, to time.Time) (Data, error) {
	var d Data
	q := url.Values{"from": {from.UTC().Format(time.RFC3339)}, "to": {to.UTC().Format(time.RFC3339)}}
	if err := c.Get(ctx, "/api/v1/experiments/"+url.PathEscape(experiment)+"/stats", q, &d.Stats); err != nil {
		return d, err
	}
	var h apiv1.HistoryResponse
	if err := c.Get(ctx, "/api/v1/alerts/history", url.Values{"experiment": {experiment}, "from": {from.UTC().Format(time.RFC3339)}}, &h); err != nil {
		return d, err
	}
	for _, t := range h.Transitions {
		if t.At.Before(to) {
			d.History = append(d.History, t)
		}
	}
	return d, nil
}

// Formats are the output formats.
var Formats = []string{"table", "markdown", "json"}

// Write renders d in format.
func Write(w io.Writer, d Data, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	case "table", "markdown":
		return write(w, d, format == "markdown")
	}
	return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

func num(p *float64, prec int) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, *p)
}

func pct(p *float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f %%", 100**p)
}

func quant(q apiv1.Quantiles) string {
	return num(q.P50, 2) + " / " + num(q.P95, 2) + " / " + num(q.P99, 2)
}

func kinds(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return " (" + strings.Join(parts, " ") + ")"
}

func diff(d *apiv1.Difference, l apiv1.Labels) string {
	if !l.Shown {
		return fmt.Sprintf("waiting for labels (%d of %d)", l.N, l.MinLabels)
	}
	if d == nil || d.Value == nil {
		return "–"
	}
	scale, unit := 1.0, ""
	if d.Metric == "accuracy" {
		scale, unit = 100, " points"
	}
	v, lo, hi := *d.Value*scale, 0.0, 0.0
	if d.Low != nil && d.High != nil {
		lo, hi = *d.Low*scale, *d.High*scale
	}
	return fmt.Sprintf("%+.2f%s [%+.2f, %+.2f] (95 %% CI, this look only; n=%d)", v, unit, lo, hi, d.N)
}

func labelMetric(l apiv1.Labels, side apiv1.LabelMetrics) string {
	if !l.Shown {
		return "–"
	}
	if side.Accuracy != nil {
		return pct(side.Accuracy)
	}
	return "MAE " + num(side.MAE, 4)
}

// write renders the table or Markdown form.
func write(w io.Writer, d Data, markdown bool) error {
	s := d.Stats
	fmt.Fprintf(w, "Experiment %s, %s → %s\n\n", s.Experiment, s.From.Format(time.RFC3339), s.To.Format(time.RFC3339))
	if len(s.Shadows) == 0 {
		fmt.Fprintln(w, "No comparisons in this range.")
		return nil
	}
	for _, rep := range s.Shadows {
		if rep.Role == "noise_baseline" {
			continue
		}
		st, fl := rep.Stats, rep.NoiseFloor
		floorName := "noise floor"
		if rep.Baseline != "" {
			floorName += " (" + rep.Baseline + ")"
		}
		f := func(get func(apiv1.Stats) string) string {
			if fl == nil {
				return "–"
			}
			return get(*fl)
		}
		rows := [][]string{
			{"", "champion", rep.Shadow, floorName},
			{"requests", fmt.Sprint(st.Total), "coverage " + pct(st.Coverage), f(func(x apiv1.Stats) string { return "coverage " + pct(x.Coverage) })},
			{"model versions", versions(st.Versions.Champion), versions(st.Versions.Shadow), f(func(x apiv1.Stats) string { return versions(x.Versions.Shadow) })},
			{"not shadowed", "", notShadowed(st), f(notShadowed)},
			{"calls paced (arrival gaps kept)", "", paced(st), f(paced)},
			{"latency p50 / p95 / p99 (ms)", quant(st.Latency.Champion), quant(st.Latency.Shadow), f(func(x apiv1.Stats) string { return quant(x.Latency.Shadow) })},
			{"latency ratio p99 (shadow ÷ " + reference(st.Latency) + ")", "", num(st.Latency.Ratio.P99, 3), f(func(x apiv1.Stats) string { return num(x.Latency.Ratio.P99, 3) })},
			{"error rate", pct(st.Champion.Rate) + kinds(st.Champion.ByKind), pct(st.Shadow.Rate) + kinds(st.Shadow.ByKind), f(func(x apiv1.Stats) string { return pct(x.Shadow.Rate) })},
			{"prediction PSI vs champion", "", num(st.Predictions.PSI, 4), f(func(x apiv1.Stats) string { return num(x.Predictions.PSI, 4) })},
			{"prediction KS vs champion", "", num(st.Predictions.KS, 4), f(func(x apiv1.Stats) string { return num(x.Predictions.KS, 4) })},
			{"agreement with champion", "", pct(st.Predictions.Agreement), f(func(x apiv1.Stats) string { return pct(x.Predictions.Agreement) })},
			{fmt.Sprintf("accuracy on labels (n=%d)", st.Labels.N), labelMetric(st.Labels, st.Labels.Champion), labelMetric(st.Labels, st.Labels.Shadow), f(func(x apiv1.Stats) string { return labelMetric(x.Labels, x.Labels.Shadow) })},
			{"difference vs champion", "", diff(st.Labels.Difference, st.Labels), f(func(x apiv1.Stats) string { return diff(x.Labels.Difference, x.Labels) })},
		}
		if markdown {
			fmt.Fprintf(w, "### %s vs champion\n\n", rep.Shadow)
			for i, r := range rows {
				fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
				if i == 0 {
					fmt.Fprintln(w, "|---|---|---|---|")
				}
			}
		} else {
			fmt.Fprintf(w, "%s vs champion\n", rep.Shadow)
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			for _, r := range rows {
				fmt.Fprintln(tw, strings.Join(r, "\t"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Alerts fired in range: %s\n", fired(d.History, rep.Shadow))
		if st.Versions.Mixed() {
			fmt.Fprintf(w, "This range mixes %d versions of %s (%s): its numbers are theirs together; narrow the range to one version to judge it.\n", len(st.Versions.Shadow), rep.Shadow, versions(st.Versions.Shadow))
		}
		if !st.Latency.LikeForLike {
			fmt.Fprintln(w, "Latency is not compared like for like: the champion is timed at the tap, shadows by the invoker; add a noise-baseline copy of the champion to compare with.")
		}
		for _, v := range s.Verdicts {
			if v.Shadow == rep.Shadow {
				if err := writeRules(w, v, markdown); err != nil {
					return err
				}
				fmt.Fprintf(w, "Verdict: %s\n", v.Summary)
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

// versions names the model versions of one side with their answers, most answers first.
func versions(vs map[string]uint64) string {
	if len(vs) == 0 {
		return "–"
	}
	names := slices.Collect(maps.Keys(vs))
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(vs[b], vs[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for _, n := range names {
		label := n
		if n == "" {
			label = "unversioned"
		}
		if len(vs) == 1 {
			parts = append(parts, label)
		} else {
			parts = append(parts, fmt.Sprintf("%s (%d)", label, vs[n]))
		}
	}
	return strings.Join(parts, ", ")
}

func reference(l apiv1.Latency) string {
	if l.LikeForLike {
		return strings.TrimPrefix(l.Reference, "noise_baseline:") + ", like for like"
	}
	return "champion at the tap"
}

// writeRules renders each rule's status, estimate with its interval (valid at every look),
// the noise floor and the reason.
func writeRules(w io.Writer, v apiv1.Verdict, markdown bool) error {
	rows := [][]string{{"rule", "status", "estimate [interval]", "noise floor", "n", "reason"}}
	est := func(e *apiv1.Estimate) string {
		if e == nil {
			return "–"
		}
		if e.Method == apiv1.MethodThreshold {
			return apiv1.FormatNumber(e.Value) + " (threshold only)"
		}
		return fmt.Sprintf("%s [%s, %s]", apiv1.FormatNumber(e.Value), apiv1.FormatNumber(e.Low), apiv1.FormatNumber(e.High))
	}
	for _, r := range v.Rules {
		n := "–"
		if r.Estimate != nil {
			n = fmt.Sprint(r.Estimate.N)
		}
		rows = append(rows, []string{r.Rule, r.Status, est(r.Estimate), est(r.NoiseFloor), n, r.Reason})
	}
	fmt.Fprintf(w, "Rules (family-wise α = %g, observed %s of at least %s):\n", v.Alpha, v.Observed.Round(time.Second), v.MinDuration)
	if markdown {
		for i, r := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
			if i == 0 {
				fmt.Fprintln(w, "|---|---|---|---|---|---|")
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// Exit codes of `understudy report`.
const (
	ExitPass     = 0 // every shadow judged PASS
	ExitFail     = 1 // a shadow FAILed
	ExitUsage    = 2 // bad flags
	ExitContinue = 3 // not decidable yet (CONTINUE), or the instrument is at fault (INSTRUMENT_ERROR)
	ExitNoData   = 4 // the API could not be read
)

// ExitCode is the report's exit code for the verdicts of shadow (every candidate when empty):
// FAIL if any failed, otherwise 3 if any is CONTINUE or INSTRUMENT_ERROR (or none was
// judged), otherwise 0.
func ExitCode(d Data, shadow string) int {
	code, judged := ExitPass, false
	for _, v := range d.Stats.Verdicts {
		if shadow != "" && v.Shadow != shadow {
			continue
		}
		judged = true
		switch v.Status {
		case apiv1.StatusFail:
			return ExitFail
		case apiv1.StatusPass:
		default:
			code = ExitContinue
		}
	}
	if !judged {
		return ExitContinue
	}
	return code
}

// notShadowed lists the requests a shadow has no answer for: deliberately not called (by
// reason) or missing.
func notShadowed(st apiv1.Stats) string {
	out := strings.TrimPrefix(kinds(st.NotShadowed), " ")
	if n := st.Statuses["shadow_missing"]; n > 0 {
		out = strings.TrimSpace(out + fmt.Sprintf(" missing=%d", n))
	}
	if out == "" {
		return "none"
	}
	return out
}

func fired(h []apiv1.Transition, shadow string) string {
	var out []string
	for _, t := range h {
		if t.Shadow == shadow && t.To == apiv1.StateFiring {
			out = append(out, fmt.Sprintf("%s (%s, %s)", t.Rule, t.Severity, t.At.Format("15:04:05")))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// paced says which share of the shadow's calls kept the requests' arrival gaps, and how the
// others left.
func paced(st apiv1.Stats) string {
	if st.Paced == nil {
		return "–"
	}
	return pct(st.Paced) + kinds(st.Dispatch)
}
