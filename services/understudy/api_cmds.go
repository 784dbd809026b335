package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/understudy/report"
)

// apiFlags are the flags of the commands that read the aggregator's API.
type apiFlags struct {
	api, token string
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.api, "api", "http://localhost:9104", "the aggregator's read API (its ops address)")
	fs.StringVar(&a.token, "api-token", "", "bearer token, when the API requires one")
}

func (a apiFlags) client() report.Client { return report.Client{Base: a.api, Token: a.token} }

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration before now", s)
	}
	return t, nil
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		a                                  apiFlags
		experiment, from, to, form, shadow string
		by, segmentKey, metric             string
		top                                int
	)
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a.register(fs)
	fs.StringVar(&experiment, "experiment", "", "experiment to report on (required)")
	fs.StringVar(&from, "from", "720h", "start: RFC 3339 time or duration before now (the verdict's confidence sequences cover everything since; default 30 days)")
	fs.StringVar(&shadow, "shadow", "", "judge only this shadow (default: every candidate)")
	fs.StringVar(&to, "to", "0s", "end: RFC 3339 time or duration before now")
	fs.StringVar(&form, "format", "table", "output: "+strings.Join(report.Formats, ", "))
	fs.StringVar(&by, "by", "", "segment: rank the values of a segment key by their contribution to --metric instead of the verdict report")
	fs.StringVar(&segmentKey, "segment-key", "", "with --by segment: the key (default: the experiment's first)")
	fs.StringVar(&metric, "metric", "psi", "with --by segment: the metric segments are ranked by (psi: drift from the champion's predictions; disagreement, error_rate_diff, accuracy_diff, mae_diff, ...)")
	fs.IntVar(&top, "top", 20, "with --by segment: values ranked apart (the rest as other), 1..100")
	if !parseFlags(fs, "report", args, stderr) {
		return 2
	}
	now := time.Now()
	f, ferr := parseWhen(from, now)
	t, terr := parseWhen(to, now)
	var errs []error
	if experiment == "" {
		errs = append(errs, errors.New("experiment: required"))
	}
	errs = append(errs, ferr, terr)
	if ferr == nil && terr == nil && !f.Before(t) {
		errs = append(errs, errors.New("from must be before to"))
	}
	if by != "" && by != "segment" {
		errs = append(errs, fmt.Errorf("by: %q is not segment", by))
	}
	if by == "segment" && form != "table" && form != "json" {
		errs = append(errs, fmt.Errorf("format: --by segment prints table or json, not %q", form))
	}
	if top < 1 || top > 100 {
		errs = append(errs, errors.New("top: must be 1..100"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "understudy report: invalid flags:\n%v\n", err)
		return 2
	}
	if by == "segment" {
		return reportSegments(ctx, a, segmentQuery{experiment: experiment, key: segmentKey, metric: metric, top: top, from: f, to: t}, form, stdout, stderr)
	}
	d, err := report.Fetch(ctx, a.client(), experiment, f, t)
	if err != nil {
		fmt.Fprintln(stderr, "understudy report:", err)
		return report.ExitNoData
	}
	if err := report.Write(stdout, d, form); err != nil {
		fmt.Fprintln(stderr, "understudy report:", err)
		return report.ExitUsage
	}
	return report.ExitCode(d, shadow)
}

func runExperiments(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, "usage: understudy experiments list [--api URL] [--api-token T]")
		return 2
	}
	var a apiFlags
	fs := flag.NewFlagSet("experiments list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a.register(fs)
	if !parseFlags(fs, "experiments", args[1:], stderr) {
		return 2
	}
	var out apiv1.ExperimentsResponse
	if err := a.client().Get(ctx, "/api/v1/experiments", nil, &out); err != nil {
		fmt.Fprintln(stderr, "understudy experiments:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPERIMENT\tSHADOW\tROLE\tCOMPARISONS\tFIRST WINDOW\tLAST WINDOW")
	for _, e := range out.Experiments {
		for _, s := range e.Shadows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Name, s.Name, s.Role, s.Total, s.First.Format(time.RFC3339), s.Last.Format(time.RFC3339))
		}
	}
	_ = tw.Flush()
	return 0
}

func runAlerts(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, "usage: understudy alerts list [--experiment E] [--state firing] [--history] [--api URL]")
		return 2
	}
	var (
		a                 apiFlags
		experiment, state string
		history           bool
	)
	fs := flag.NewFlagSet("alerts list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a.register(fs)
	fs.StringVar(&experiment, "experiment", "", "only this experiment")
	fs.StringVar(&state, "state", "", "only alerts in this state (inactive, pending, firing, resolved)")
	fs.BoolVar(&history, "history", false, "list transitions instead of current states")
	if !parseFlags(fs, "alerts", args[1:], stderr) {
		return 2
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	defer func() { _ = tw.Flush() }()
	q := url.Values{}
	if experiment != "" {
		q.Set("experiment", experiment)
	}
	val := func(p *float64) string {
		if p == nil {
			return "–"
		}
		return fmt.Sprintf("%.4g", *p)
	}
	if history {
		var out apiv1.HistoryResponse
		if err := a.client().Get(ctx, "/api/v1/alerts/history", q, &out); err != nil {
			fmt.Fprintln(stderr, "understudy alerts:", err)
			return 1
		}
		fmt.Fprintln(tw, "AT\tEXPERIMENT\tSHADOW\tRULE\tSEVERITY\tTRANSITION\tVALUE\tNOISE FLOOR")
		for _, t := range out.Transitions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s → %s\t%s\t%s\n", t.At.Format(time.RFC3339), t.Experiment, t.Shadow, t.Rule, t.Severity, t.From, t.To, val(t.Value), val(t.NoiseFloor))
		}
		return 0
	}
	if state != "" {
		q.Set("state", state)
	}
	var out apiv1.AlertsResponse
	if err := a.client().Get(ctx, "/api/v1/alerts", q, &out); err != nil {
		fmt.Fprintln(stderr, "understudy alerts:", err)
		return 1
	}
	fmt.Fprintln(tw, "EXPERIMENT\tSHADOW\tRULE\tSTATE\tSINCE\tVALUE\tNOISE FLOOR\tSAMPLES")
	for _, c := range out.Alerts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", c.Experiment, c.Shadow, c.Rule, c.State, c.Since.Format(time.RFC3339), val(c.Value), val(c.NoiseFloor), c.Samples)
	}
	return 0
}

// runCompletion prints a shell completion script for the subcommands and their flags.
func runCompletion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprintln(stderr, "usage: understudy completion bash|zsh   (e.g. source <(understudy completion bash))")
		return 2
	}
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	flags := map[string]string{
		"demo":        "--duration --rate --brokers --database-url --data-dir --partitions --experiment --verbose --exit",
		"report":      "--api --api-token --experiment --from --to --format --by --segment-key --metric --top",
		"experiments": "list --api --api-token",
		"alerts":      "list --api --api-token --experiment --state --history",
		"examples":    "--api --api-token --experiment --shadow --kind --from --to --format --limit",
		"topics":      "create",
		"replay":      "--experiment --from --to --shadow --rate --preserve-timing --run-id --state-file",
		"completion":  "bash zsh",
	}
	var cases strings.Builder
	for _, n := range names {
		fmt.Fprintf(&cases, "    %s) words=%q ;;\n", n, flags[n])
	}
	script := fmt.Sprintf(`# understudy shell completion
_understudy() {
  local cur=${COMP_WORDS[COMP_CWORD]} words
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W %q -- "$cur"))
    return
  fi
  case "${COMP_WORDS[1]}" in
%s    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
`, strings.Join(names, " "), cases.String())
	if args[0] == "zsh" {
		script = "autoload -U +X bashcompinit && bashcompinit\n" + script
	}
	fmt.Fprint(stdout, script+"complete -F _understudy understudy\n")
	return 0
}
