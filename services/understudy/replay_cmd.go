package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/services/invoker/replay"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/kafka"
)

// runReplay replays recorded traffic of a time window into one shadow.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	kc := kafka.NewDefaultConfig("replay")
	var (
		exp, from, to, shadowName, file, shadowURL, runID, stateFile string
		rateFlag                                                     float64
		preserve                                                     bool
	)
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kc.RegisterFlags(fs)
	fs.StringVar(&exp, "experiment", "", "experiment whose traffic to replay (required)")
	fs.StringVar(&from, "from", "", "window start, RFC 3339 (required)")
	fs.StringVar(&to, "to", "", "window end, RFC 3339, exclusive (required)")
	fs.StringVar(&shadowName, "shadow", "", "shadow to call: its name in --experiments.file, or the result name with --shadow.url (required)")
	fs.StringVar(&file, "experiments.file", "", "invoker experiments file defining the shadow")
	fs.StringVar(&shadowURL, "shadow.url", "", "shadow URL, when it is not in an experiments file")
	fs.StringVar(&runID, "run-id", "", "tag of this run's results (default replay-<start time>)")
	fs.StringVar(&stateFile, "state-file", "", "progress file for resuming (default .understudy-replay-<run-id>.json)")
	fs.Float64Var(&rateFlag, "rate", 0, "events per second (0: as fast as the shadow's budget allows)")
	fs.BoolVar(&preserve, "preserve-timing", false, "space calls as the events were spaced when recorded")
	if !parseFlags(fs, "replay", args, stderr) {
		return 2
	}
	opts, err := replayOptions(kc, exp, from, to, shadowName, file, shadowURL, runID, stateFile, rateFlag, preserve)
	if err != nil {
		fmt.Fprintf(stderr, "understudy replay: invalid flags:\n%v\n", err)
		return 2
	}
	start := time.Now()
	opts.Progress = func(read, total int64) { progressBar(stderr, read, total, start) }
	fmt.Fprintf(stderr, "replaying %s [%s, %s) into shadow %s as run %s (state in %s)\n", exp, from, to, opts.Shadow.Name, opts.RunID, opts.StateFile)
	sum, err := replay.Run(ctx, opts, nopObserver{})
	fmt.Fprintln(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "understudy replay: %v (run the same command again to resume)\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "run %s: %d records read, %d events replayed into %s, outcomes %v\n", opts.RunID, sum.Read, sum.Replayed, opts.Shadow.Name, sum.Outcomes)
	return 0
}

func replayOptions(kc kafka.Config, exp, from, to, shadowName, file, shadowURL, runID, stateFile string, rate float64, preserve bool) (replay.Options, error) {
	errs := []error{kc.Validate()}
	o := replay.Options{Kafka: kc, Experiment: exp, Rate: rate, PreserveTiming: preserve, RunID: runID, StateFile: stateFile}
	if exp == "" {
		errs = append(errs, errors.New("experiment: required"))
	}
	var err error
	if o.From, err = time.Parse(time.RFC3339, from); err != nil {
		errs = append(errs, fmt.Errorf("from: %w", err))
	}
	if o.To, err = time.Parse(time.RFC3339, to); err != nil {
		errs = append(errs, fmt.Errorf("to: %w", err))
	} else if !o.From.Before(o.To) {
		errs = append(errs, errors.New("to: must be after from"))
	}
	if rate < 0 || (rate > 0 && preserve) {
		errs = append(errs, errors.New("rate: must be positive, and not combined with --preserve-timing"))
	}
	switch {
	case shadowName == "":
		errs = append(errs, errors.New("shadow: required"))
	case file != "":
		exps, err := experiment.Load(file)
		if err != nil {
			errs = append(errs, err)
			break
		}
		found := false
		for _, e := range exps {
			for _, s := range e.Shadows {
				if s.Name == shadowName {
					o.Shadow, found = s, true
				}
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("shadow: %q is not in %s", shadowName, file))
		}
	case shadowURL != "":
		o.Shadow = experiment.Shadow{Name: shadowName, URL: shadowURL}
		o.Shadow.Defaults()
		if err := experiment.Validate([]experiment.Experiment{{Name: exp, Shadows: []experiment.Shadow{o.Shadow}}}); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, errors.New("shadow: give --experiments.file or --shadow.url"))
	}
	if o.RunID == "" {
		o.RunID = "replay-" + time.Now().UTC().Format("20060102T150405Z")
	}
	if o.StateFile == "" {
		o.StateFile = ".understudy-replay-" + o.RunID + ".json"
	}
	return o, errors.Join(errs...)
}

func progressBar(w io.Writer, read, total int64, start time.Time) {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(read)/float64(total))
	}
	fmt.Fprintf(w, "\r[%s%s] %5.1f%%  %d/%d records  %s", strings.Repeat("#", int(frac*width)), strings.Repeat(".", width-int(frac*width)), 100*frac, read, total, time.Since(start).Round(time.Second))
}

type nopObserver struct{}

func (nopObserver) Called(string, string, time.Duration) {}
func (nopObserver) InFlight(string, int)                 {}
func (nopObserver) Circuit(string, bool)                 {}
