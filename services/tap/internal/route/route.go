// Package route holds the tap's routing table: which requests belong to which experiment,
// which champion serves them, and how they are sampled, captured and redacted. It parses and
// validates the YAML routes file and matches requests; it does no I/O besides reading the file.
package route

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/services/platform/predict"
	"gopkg.in/yaml.v3"
)

// Oversize policies: what happens to the event of a request whose body exceeds the capture limit.
const (
	OversizeTruncate = "truncate" // capture the first max_bytes and mark the event truncated
	OversizeSkip     = "skip"     // produce no event; count it as too_large
)

// Sampling keys.
const (
	SampleByRequestID = "request_id"
	headerPrefix      = "header:"
)

// MaxCaptureBytes is the largest capture limit: below Kafka's default 1 MiB message limit,
// with room for the rest of the event.
const MaxCaptureBytes = 900 << 10

// File is the YAML routes file.
type File struct {
	Routes []Route `yaml:"routes"`
}

// Route maps matching requests to an experiment and a champion.
type Route struct {
	Name       string    `yaml:"name"`
	Match      Match     `yaml:"match"`
	Experiment string    `yaml:"experiment"`
	Tenant     string    `yaml:"tenant"`
	Champion   Champion  `yaml:"champion"`
	Sampling   Sampling  `yaml:"sampling"`
	Capture    Capture   `yaml:"capture"`
	Redaction  Redaction `yaml:"redaction"`
}

// Match selects requests by host (empty: any) and path prefix (empty: any). The most
// specific route wins: an exact host before any host, then the longest prefix.
type Match struct {
	Host       string `yaml:"host"`
	PathPrefix string `yaml:"path_prefix"`
}

// Champion is the upstream model server.
type Champion struct {
	URL          string        `yaml:"url"`
	Protocol     string        `yaml:"protocol"` // oip-v2, kserve-v1 or json-pointer:/path
	H2C          bool          `yaml:"h2c"`      // HTTP/2 without TLS to the upstream
	Timeout      time.Duration `yaml:"timeout"`  // response header timeout; 0: none
	ModelName    string        `yaml:"model_name"`
	ModelVersion string        `yaml:"model_version"`
}

// Sampling keeps a deterministic fraction of requests, keyed by request id or a header.
type Sampling struct {
	Rate *float64 `yaml:"rate"` // default 1
	Key  string   `yaml:"key"`  // request_id (default) or header:<Name>
}

// Capture bounds what is copied into events.
type Capture struct {
	MaxBytes int    `yaml:"max_bytes"` // default 512 KiB
	Oversize string `yaml:"oversize"`  // truncate (default) or skip
}

// Redaction removes personal data before an event is produced. Authorization and Cookie
// headers are never captured whatever this says.
type Redaction struct {
	Remove []string `yaml:"remove"` // JSON pointers removed from request and response bodies
	Hash   []string `yaml:"hash"`   // JSON pointers replaced by a keyed hash (HMAC-SHA256)
}

// SampleRate returns the rate, 1 when unset.
func (s Sampling) SampleRate() float64 {
	if s.Rate == nil {
		return 1
	}
	return *s.Rate
}

// Header returns the header a sampling key names, or "" for the request id.
func (s Sampling) Header() string {
	h, _ := strings.CutPrefix(s.Key, headerPrefix)
	if h == s.Key {
		return ""
	}
	return h
}

// Load reads and validates a routes file; the error lists every problem.
func Load(path string) ([]Route, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes: %w", err)
	}
	return Parse(b)
}

// Parse parses and validates YAML routes, filling defaults; the error lists every problem.
func Parse(b []byte) ([]Route, error) {
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse routes: %w", err)
	}
	if len(f.Routes) == 0 {
		return nil, errors.New("routes: at least one route is required")
	}
	for i := range f.Routes {
		f.Routes[i].defaults(i)
	}
	return f.Routes, Validate(f.Routes)
}

func (r *Route) defaults(i int) {
	if r.Name == "" {
		r.Name = fmt.Sprintf("route-%d", i)
	}
	if r.Champion.Protocol == "" {
		r.Champion.Protocol = predict.ProtocolOIPv2
	}
	if r.Sampling.Key == "" {
		r.Sampling.Key = SampleByRequestID
	}
	if r.Capture.MaxBytes == 0 {
		r.Capture.MaxBytes = 512 << 10
	}
	if r.Capture.Oversize == "" {
		r.Capture.Oversize = OversizeTruncate
	}
}

// Validate reports every problem of every route.
func Validate(routes []Route) error {
	var errs []error
	seen := map[string]string{}
	for _, r := range routes {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("route %q: "+format, append([]any{r.Name}, args...)...))
		}
		key := r.Match.Host + "|" + r.Match.PathPrefix
		if other, dup := seen[key]; dup {
			bad("same match as route %q", other)
		}
		seen[key] = r.Name
		if r.Match.PathPrefix != "" && !strings.HasPrefix(r.Match.PathPrefix, "/") {
			bad("match.path_prefix %q must start with /", r.Match.PathPrefix)
		}
		if strings.Contains(r.Match.Host, "/") {
			bad("match.host %q is a host name, not a URL", r.Match.Host)
		}
		if r.Experiment == "" {
			bad("experiment is required")
		}
		if u, err := url.Parse(r.Champion.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("champion.url %q is not an http(s) URL", r.Champion.URL)
		}
		if r.Champion.H2C && strings.HasPrefix(r.Champion.URL, "https") {
			bad("champion.h2c is for plain http upstreams")
		}
		if _, err := predict.Parse(r.Champion.Protocol); err != nil {
			bad("champion.protocol: %v", err)
		}
		if r.Champion.Timeout < 0 {
			bad("champion.timeout must not be negative")
		}
		if rate := r.Sampling.SampleRate(); rate < 0 || rate > 1 {
			bad("sampling.rate %v must be between 0 and 1", rate)
		}
		if r.Sampling.Key != SampleByRequestID && (!strings.HasPrefix(r.Sampling.Key, headerPrefix) || r.Sampling.Header() == "") {
			bad("sampling.key %q must be request_id or header:<Name>", r.Sampling.Key)
		}
		if r.Capture.MaxBytes < 0 || r.Capture.MaxBytes > MaxCaptureBytes {
			bad("capture.max_bytes %d must be between 1 and %d (below Kafka's 1 MiB message limit)", r.Capture.MaxBytes, MaxCaptureBytes)
		}
		if r.Capture.Oversize != OversizeTruncate && r.Capture.Oversize != OversizeSkip {
			bad("capture.oversize %q must be truncate or skip", r.Capture.Oversize)
		}
		for _, p := range append(append([]string{}, r.Redaction.Remove...), r.Redaction.Hash...) {
			if !strings.HasPrefix(p, "/") {
				bad("redaction path %q must be a JSON pointer starting with /", p)
			}
		}
	}
	return errors.Join(errs...)
}

// Table matches requests to routes. It is immutable; build a new one to change routes.
type Table struct {
	routes []Route // most specific first
}

// NewTable returns a table over validated routes.
func NewTable(routes []Route) *Table {
	sorted := append([]Route(nil), routes...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Match, sorted[j].Match
		if (a.Host != "") != (b.Host != "") {
			return a.Host != ""
		}
		return len(a.PathPrefix) > len(b.PathPrefix)
	})
	return &Table{routes: sorted}
}

// Routes returns the routes, most specific first.
func (t *Table) Routes() []Route { return t.routes }

// Match returns the index (in Routes) of the route for host and path, or -1.
func (t *Table) Match(host, path string) int {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for i, r := range t.routes {
		if r.Match.Host != "" && !strings.EqualFold(r.Match.Host, host) {
			continue
		}
		if strings.HasPrefix(path, r.Match.PathPrefix) {
			return i
		}
	}
	return -1
}
