package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// runExamples lists the requests kept to explain an experiment's windows, with both models'
// answers and error payloads; --format=json prints the API's answer whole (bodies included).
func runExamples(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		a                                        apiFlags
		experiment, shadow, kind, from, to, form string
		limit                                    int
	)
	fs := flag.NewFlagSet("examples", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a.register(fs)
	fs.StringVar(&experiment, "experiment", "", "experiment (required)")
	fs.StringVar(&shadow, "shadow", "", "only this shadow")
	fs.StringVar(&kind, "kind", "", "only this kind: "+strings.Join(apiv1.ExampleKinds, ", "))
	fs.StringVar(&from, "from", "1h", "start: RFC 3339 time or duration before now")
	fs.StringVar(&to, "to", "0s", "end: RFC 3339 time or duration before now")
	fs.StringVar(&form, "format", "table", "output: table or json")
	fs.IntVar(&limit, "limit", 100, "at most this many examples (1..1000)")
	if !parseFlags(fs, "examples", args, stderr) {
		return 2
	}
	now := time.Now()
	f, ferr := parseWhen(from, now)
	t, terr := parseWhen(to, now)
	errs := []error{ferr, terr}
	if experiment == "" {
		errs = append(errs, errors.New("experiment: required"))
	}
	if kind != "" && !slices.Contains(apiv1.ExampleKinds, kind) {
		errs = append(errs, fmt.Errorf("kind: %q is not one of %s", kind, strings.Join(apiv1.ExampleKinds, ", ")))
	}
	if form != "table" && form != "json" {
		errs = append(errs, fmt.Errorf("format: %q is not table or json", form))
	}
	if limit < 1 || limit > 1000 {
		errs = append(errs, errors.New("limit: must be 1..1000"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "understudy examples: invalid flags:\n%v\n", err)
		return 2
	}
	q := url.Values{"from": {f.UTC().Format(time.RFC3339)}, "to": {t.UTC().Format(time.RFC3339)}, "limit": {fmt.Sprint(limit)}}
	if shadow != "" {
		q.Set("shadow", shadow)
	}
	if kind != "" {
		q.Set("kind", kind)
	}
	var out apiv1.ExamplesResponse
	if err := a.client().Get(ctx, "/api/v1/experiments/"+url.PathEscape(experiment)+"/examples", q, &out); err != nil {
		fmt.Fprintln(stderr, "understudy examples:", err)
		return 1
	}
	if form == "json" {
		return printJSON(stdout, stderr, "examples", out)
	}
	writeExamples(stdout, out.Examples)
	return 0
}

// writeExamples prints one line per example: both answers side by side, the error payload
// of whichever failed, and the start of the request body.
func writeExamples(w io.Writer, exs []apiv1.Example) {
	if len(exs) == 0 {
		fmt.Fprintln(w, "No examples in this range.")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WINDOW\tSHADOW\tKIND\tSCORE\tREQUEST\tCHAMPION\tSHADOW ANSWER\tERROR\tREQUEST BODY")
	for _, e := range exs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.4g\t%s\t%s\t%s\t%s\t%s\n", e.Window.Format(time.RFC3339), e.Shadow, e.Kind, e.Score, e.RequestID,
			answerText(e.Champion), answerText(e.Answer), errorText(e), clip(bodyText(e.Request), 60))
	}
	_ = tw.Flush()
}

func answerText(a apiv1.Answer) string {
	v, _ := json.Marshal(a.Value)
	return fmt.Sprintf("%s (%d, %.1f ms)", v, a.Status, a.LatencyMS)
}

func errorText(e apiv1.Example) string {
	var parts []string
	for _, side := range []struct {
		name string
		a    apiv1.Answer
	}{{"champion", e.Champion}, {"shadow", e.Answer}} {
		if side.a.Error != nil {
			parts = append(parts, fmt.Sprintf("%s %s: %s; body %s", side.name, side.a.Error.Kind, side.a.Error.Message, clip(bodyText(side.a.Body), 60)))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, " | ")
}

func bodyText(b apiv1.Body) string {
	s := b.Text
	if b.Base64 != "" {
		s = "base64:" + b.Base64
	}
	if b.Truncated {
		s += "…(truncated)"
	}
	if s == "" {
		return "–"
	}
	return s
}

// clip shortens s to n runes, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// printJSON prints an API answer whole, indented, for command cmd; it returns the exit code.
func printJSON(stdout, stderr io.Writer, cmd string, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "understudy %s: %v\n", cmd, err)
		return 1
	}
	return 0
}
