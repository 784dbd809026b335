// Package experiment holds the experiments configuration shared by the invoker and the joiner:
// for each experiment, the shadows to call and each shadow's budget (timeout, in-flight calls,
// rate), sampling and circuit breaker (invoker), and how long its comparisons wait for missing
// sides and for labels (joiner). It parses and validates the YAML file; it does no I/O besides
// reading it.
package experiment

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"gopkg.in/yaml.v3"
)

// File is the YAML experiments file.
type File struct {
	Experiments []Experiment `yaml:"experiments"`
}

// Experiment names the shadows that receive an experiment's traffic.
type Experiment struct {
	Name    string   `yaml:"name"`
	Shadows []Shadow `yaml:"shadows"`
	Join    Join     `yaml:"join"`
}

// Join says how long the joiner waits for an experiment's inputs. Zero values mean the joiner's
// flag defaults (--join.window, --join.grace, --labels.window).
type Join struct {
	Window      time.Duration `yaml:"window"`       // champion and shadows, in event time
	Grace       time.Duration `yaml:"grace"`        // extra event time for late or out-of-order inputs
	LabelWindow time.Duration `yaml:"label_window"` // label event time minus request event time
}

// ShadowNames returns the names of the experiment's shadows, in file order.
func (e Experiment) ShadowNames() []string {
	out := make([]string, len(e.Shadows))
	for i, s := range e.Shadows {
		out[i] = s.Name
	}
	return out
}

// Shadow is one candidate (or noise baseline) model and its budget.
type Shadow struct {
	Name        string        `yaml:"name"`
	Role        string        `yaml:"role"` // candidate (default) or noise_baseline
	URL         string        `yaml:"url"`  // base URL (captured path appended) or full endpoint
	Protocol    string        `yaml:"protocol"`
	Model       string        `yaml:"model"`
	Version     string        `yaml:"version"`
	Timeout     time.Duration `yaml:"timeout"`       // per call; default 2s
	MaxInFlight int           `yaml:"max_in_flight"` // concurrent calls; default 64
	RateLimit   float64       `yaml:"rate_limit"`    // calls per second; 0: unlimited
	Burst       int           `yaml:"burst"`         // token-bucket burst; default max(1, rate_limit/10)
	Sampling    Sampling      `yaml:"sampling"`
	Circuit     Circuit       `yaml:"circuit"`
	MaxBodyKB   int           `yaml:"max_body_kb"` // response bytes kept in results; default 64
}

// Sampling shadows a deterministic fraction of requests (see services/platform/sample).
type Sampling struct {
	Rate *float64 `yaml:"rate"` // default 1
	Key  string   `yaml:"key"`  // request_id (default) or header:<Name> (from the captured headers)
}

// Circuit configures the breaker: after Failures consecutive failures (timeouts, connection
// errors, 5xx) it opens for Cooldown, then lets one probe call through.
type Circuit struct {
	Failures int           `yaml:"failures"` // default 5; negative disables the breaker
	Cooldown time.Duration `yaml:"cooldown"` // default 10s
}

// Rate1 returns the sampling rate, 1 when unset.
func (s Sampling) Rate1() float64 {
	if s.Rate == nil {
		return 1
	}
	return *s.Rate
}

// Load reads and validates an experiments file; the error lists every problem.
func Load(path string) ([]Experiment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read experiments: %w", err)
	}
	return Parse(b)
}

// Parse parses and validates YAML experiments, filling defaults.
func Parse(b []byte) ([]Experiment, error) {
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse experiments: %w", err)
	}
	for i := range f.Experiments {
		for j := range f.Experiments[i].Shadows {
			f.Experiments[i].Shadows[j].Defaults()
		}
	}
	return f.Experiments, Validate(f.Experiments)
}

// Defaults fills unset fields.
func (s *Shadow) Defaults() {
	if s.Role == "" {
		s.Role = schemas.RoleCandidate
	}
	if s.Protocol == "" {
		s.Protocol = predict.ProtocolOIPv2
	}
	if s.Model == "" {
		s.Model = s.Name
	}
	if s.Timeout == 0 {
		s.Timeout = 2 * time.Second
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = 64
	}
	if s.Burst == 0 {
		s.Burst = max(1, int(s.RateLimit/10))
	}
	if s.Sampling.Key == "" {
		s.Sampling.Key = "request_id"
	}
	if s.Circuit.Failures == 0 {
		s.Circuit.Failures = 5
	}
	if s.Circuit.Cooldown == 0 {
		s.Circuit.Cooldown = 10 * time.Second
	}
	if s.MaxBodyKB == 0 {
		s.MaxBodyKB = 64
	}
}

// Validate reports every problem of every experiment and shadow.
func Validate(exps []Experiment) error {
	var errs []error
	if len(exps) == 0 {
		errs = append(errs, errors.New("experiments: at least one experiment is required"))
	}
	seen := map[string]bool{}
	for _, e := range exps {
		if e.Name == "" {
			errs = append(errs, errors.New("experiment: name is required"))
		}
		if seen[e.Name] {
			errs = append(errs, fmt.Errorf("experiment %q: defined twice", e.Name))
		}
		seen[e.Name] = true
		if len(e.Shadows) == 0 {
			errs = append(errs, fmt.Errorf("experiment %q: at least one shadow is required", e.Name))
		}
		if e.Join.Window < 0 || e.Join.Grace < 0 || e.Join.LabelWindow < 0 {
			errs = append(errs, fmt.Errorf("experiment %q: join.window, join.grace and join.label_window must not be negative", e.Name))
		}
		names := map[string]bool{}
		for _, s := range e.Shadows {
			bad := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("experiment %q shadow %q: "+format, append([]any{e.Name, s.Name}, args...)...))
			}
			if s.Name == "" {
				bad("name is required")
			}
			if names[s.Name] {
				bad("defined twice")
			}
			names[s.Name] = true
			if s.Role != schemas.RoleCandidate && s.Role != schemas.RoleNoiseBaseline {
				bad("role %q is neither candidate nor noise_baseline", s.Role)
			}
			if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("url %q is not an http(s) URL", s.URL)
			}
			if _, err := predict.Parse(s.Protocol); err != nil {
				bad("protocol: %v", err)
			}
			if s.Timeout < 0 {
				bad("timeout must not be negative")
			}
			if s.MaxInFlight < 1 {
				bad("max_in_flight must be at least 1")
			}
			if s.RateLimit < 0 || s.Burst < 1 {
				bad("rate_limit must not be negative and burst must be at least 1")
			}
			if r := s.Sampling.Rate1(); r < 0 || r > 1 {
				bad("sampling.rate %v must be between 0 and 1", r)
			}
			if s.Sampling.Key != "request_id" && (!strings.HasPrefix(s.Sampling.Key, "header:") || len(s.Sampling.Key) == len("header:")) {
				bad("sampling.key %q must be request_id or header:<Name>", s.Sampling.Key)
			}
			if s.Circuit.Cooldown < 0 {
				bad("circuit.cooldown must not be negative")
			}
			if s.MaxBodyKB < 0 {
				bad("max_body_kb must not be negative")
			}
		}
	}
	return errors.Join(errs...)
}

// Find returns the experiment named name.
func Find(exps []Experiment, name string) (Experiment, bool) {
	for _, e := range exps {
		if e.Name == name {
			return e, true
		}
	}
	return Experiment{}, false
}
