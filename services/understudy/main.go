// Command understudy is Understudy's command-line tool: it runs the one-process demo, reports
// on experiments and alerts from the aggregator's read API, replays traffic and administers
// topics. The services themselves are separate binaries (services/tap, services/invoker,
// services/joiner, services/aggregator).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/understudy-ml/understudy/services/platform/flagenv"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is set in init: runCompletion reads it, which a package-level initializer cannot.
var commands []command

func init() {
	commands = []command{
		{"demo", "run the whole pipeline in one process with demo models and traffic", runDemo},
		{"topics", "create Understudy's topics (`understudy topics create`)", runTopics},
		{"replay", "replay recorded traffic of a time window into a shadow, tagged with a run id", runReplay},
		{"report", "champion vs each shadow over a time range, with the noise floor and a verdict", runReport},
		{"experiments", "list experiments and their shadows (`understudy experiments list`)", runExperiments},
		{"examples", "the requests behind an experiment's numbers: differences, flips, errors with their payloads", runExamples},
		{"alerts", "list alert states or transitions (`understudy alerts list`)", runAlerts},
		{"model", "serve a demo model (champion, candidate or copy) over the Open Inference Protocol v2", runModel},
		{"completion", "print a shell completion script (`source <(understudy completion bash)`)", runCompletion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "understudy: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: understudy <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `understudy <command> -h` for a command's flags.")
}

// parseFlags parses args and the environment (UNDERSTUDY_<CMD>_<FLAG>, UNDERSTUDY_<FLAG>)
// into fs, whose output is stderr. The flag package prints its own errors; a bad environment
// value is printed here, naming the variable. It reports whether the command may go on.
func parseFlags(fs *flag.FlagSet, cmd string, args []string, stderr io.Writer) bool {
	err := flagenv.Parse(fs, cmd, args, flagenv.LookupEnv)
	if errors.Is(err, flagenv.ErrEnv) {
		fmt.Fprintf(stderr, "understudy %s: %v\n", cmd, err)
	}
	return err == nil
}
