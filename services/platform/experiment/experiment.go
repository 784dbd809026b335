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
	"path"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/segment"
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
	// ChampionURL is the champion's base URL. A shadow pointing at the same server is refused
	// (it would send shadow traffic to production) unless it sets allow_champion_url.
	ChampionURL string `yaml:"champion_url"`
	// Compare says how the aggregator compares numeric predictions (see Compare).
	Compare Compare `yaml:"compare"`
	// Segments declares the keys the experiment's statistics are broken down by (see
	// package segment): the joiner reads their values into each comparison, the aggregator
	// keeps windows per value.
	Segments segment.Config `yaml:"segments"`
}

// Compare sets how numeric predictions are judged. Threshold (default 0.5) reads a score in
// [0, 1] as a decision: it scores accuracy against 0/1 labels, and two scores agree when they
// fall on the same side of it. With a tolerance (Absolute and/or Relative, for regression
// outputs), two numbers agree instead when |shadow − champion| ≤ max(Absolute,
// Relative × |champion|).
type Compare struct {
	Threshold *float64 `yaml:"threshold"`
	Tolerance struct {
		Absolute float64 `yaml:"absolute"`
		Relative float64 `yaml:"relative"`
	} `yaml:"tolerance"`
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
	Forward     Forward       `yaml:"forward"`
	// AllowChampionURL permits a URL on the champion's server (scheme, host and port).
	AllowChampionURL bool `yaml:"allow_champion_url"`
}

// Forward says which captured requests a shadow may receive. Events come from any producer
// of the inference topic, so what they ask the invoker to send is checked here: a request
// outside these methods and paths is not sent (result kind not_allowed), management paths
// (/v2/repository/...) never are, and only the listed headers are replayed.
type Forward struct {
	// Methods allowed; default POST.
	Methods []string `yaml:"methods"`
	// Paths allowed, as path.Match patterns ("*" matches within one segment); default: the
	// inference paths of the shadow's protocol (oip-v2: /v2/models/*/infer and
	// /v2/models/*/versions/*/infer; kserve-v1: /v1/models/*:predict); json-pointer: any
	// path but management ones. Ignored when the shadow's URL names a full endpoint.
	Paths []string `yaml:"paths"`
	// Headers replayed from the captured request besides Content-Type, Accept and User-Agent; credentials
	// (Authorization, Cookie, Proxy-Authorization) and hop-by-hop headers never are.
	Headers []string `yaml:"headers"`
}

// managementPrefix starts the model-management API of OIP servers (MLServer, KServe, Triton):
// load, unload, repository index. Shadow traffic never reaches it.
const managementPrefix = "/v2/repository"

// DefaultPaths returns the inference paths of protocol (nil: any non-management path).
func DefaultPaths(protocol string) []string {
	switch protocol {
	case predict.ProtocolOIPv2:
		return []string{"/v2/models/*/infer", "/v2/models/*/versions/*/infer"}
	case predict.ProtocolKServeV1:
		return []string{"/v1/models/*:predict"}
	}
	return nil
}

// neverForwarded lists headers no shadow receives from an event, whatever the config says.
var neverForwarded = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true,
	"host": true, "connection": true, "keep-alive": true, "transfer-encoding": true, "te": true,
	"trailer": true, "upgrade": true, "content-length": true, "proxy-connection": true,
	"x-forwarded-for": true, "x-forwarded-host": true, "x-forwarded-proto": true, "forwarded": true,
}

// AllowsMethod reports whether a shadow may receive a request with method.
func (f Forward) AllowsMethod(method string) bool {
	for _, m := range f.Methods {
		if strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

// AllowsPath reports whether a shadow may receive a request for p: a clean absolute path,
// outside the management API, matching one of Paths (any, when Paths is empty).
func (f Forward) AllowsPath(p string) bool {
	if p == "" || p[0] != '/' || path.Clean(p) != p || strings.ContainsAny(p, "?#%\\") {
		return false
	}
	if p == managementPrefix || strings.HasPrefix(p, managementPrefix+"/") {
		return false
	}
	if len(f.Paths) == 0 {
		return true
	}
	for _, pat := range f.Paths {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// AllowsHeader reports whether a captured header (any case) is replayed to the shadow.
func (f Forward) AllowsHeader(name string) bool {
	name = strings.ToLower(name)
	if neverForwarded[name] {
		return false
	}
	if name == "content-type" || name == "accept" || name == "user-agent" {
		return true
	}
	for _, h := range f.Headers {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
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
		f.Experiments[i].Segments.Defaults()
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
	if len(s.Forward.Methods) == 0 {
		s.Forward.Methods = []string{"POST"}
	}
	if s.Forward.Paths == nil {
		s.Forward.Paths = DefaultPaths(s.Protocol)
	}
}

// sameServer reports whether two http(s) URLs name the same scheme, host and port.
func sameServer(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
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
		if limit := schemas.DefaultLimits().MaxShadows; len(e.Shadows) > limit {
			errs = append(errs, fmt.Errorf("experiment %q: %d shadows, at most %d (a comparison must fit a Kafka record)", e.Name, len(e.Shadows), limit))
		}
		if t := e.Compare.Threshold; t != nil && (!(*t > 0) || !(*t < 1)) {
			errs = append(errs, fmt.Errorf("experiment %q: compare.threshold must be strictly between 0 and 1, got %g", e.Name, *t))
		}
		if tol := e.Compare.Tolerance; !(tol.Absolute >= 0) || !(tol.Relative >= 0) || tol.Relative > 1 {
			errs = append(errs, fmt.Errorf("experiment %q: compare.tolerance: absolute must be ≥ 0 and relative in [0, 1]", e.Name))
		}
		if err := e.Segments.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("experiment %q: %w", e.Name, err))
		}
		if e.Join.Window < 0 || e.Join.Grace < 0 || e.Join.LabelWindow < 0 {
			errs = append(errs, fmt.Errorf("experiment %q: join.window, join.grace and join.label_window must not be negative", e.Name))
		}
		var champion *url.URL
		if e.ChampionURL != "" {
			u, err := url.Parse(e.ChampionURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("experiment %q: champion_url is not an http(s) URL", e.Name))
			} else {
				champion = u
			}
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
				bad("url is not an http(s) URL")
			} else if champion != nil && sameServer(u, champion) && !s.AllowChampionURL {
				bad("url points at the champion's server (%s); shadow traffic would reach production (set allow_champion_url to permit it)", champion.Host)
			}
			for _, m := range s.Forward.Methods {
				if m == "" || strings.ContainsFunc(m, func(r rune) bool { return r < 'A' || r > 'Z' }) {
					bad("forward.methods: %q is not an upper-case HTTP method", m)
				}
			}
			for _, p := range s.Forward.Paths {
				if _, err := path.Match(p, "/"); err != nil || !strings.HasPrefix(p, "/") {
					bad("forward.paths: %q is not an absolute path pattern", p)
				} else if strings.HasPrefix(p, managementPrefix) {
					bad("forward.paths: %q is a model-management path; shadows never receive those", p)
				}
			}
			for _, h := range s.Forward.Headers {
				if neverForwarded[strings.ToLower(h)] {
					bad("forward.headers: %q is never forwarded (credentials and hop-by-hop headers)", h)
				}
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
