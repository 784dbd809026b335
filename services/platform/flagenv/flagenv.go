// Package flagenv parses a service's flags with environment overrides: flag kafka.brokers of
// service tap may also be set by UNDERSTUDY_TAP_KAFKA_BROKERS or UNDERSTUDY_KAFKA_BROKERS.
// Command-line flags win over the environment, which wins over defaults.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// ErrEnv classifies Parse's errors about environment values; command-line errors are the
// flag package's own (already printed by a FlagSet with an output).
var ErrEnv = errors.New("bad environment value")

// EnvNames returns the environment variables that set flag name for service, most specific first.
func EnvNames(service, name string) []string {
	key := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(name))
	return []string{"UNDERSTUDY_" + strings.ToUpper(service) + "_" + key, "UNDERSTUDY_" + key}
}

// Parse parses args into fs, then sets every flag not given on the command line from the
// environment (lookup, usually os.LookupEnv). It reports every bad value at once.
func Parse(fs *flag.FlagSet, service string, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		for _, env := range EnvNames(service, f.Name) {
			if v, ok := lookup(env); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%w %s: %w", ErrEnv, env, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

// LookupEnv is os.LookupEnv, for callers that pass it to Parse.
func LookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
