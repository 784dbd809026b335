// Package segment declares the segment keys of an experiment and reads a request's value of
// each: a request header, a JSON pointer into the request body (a numeric feature when bucket
// edges are given), or a model version. The joiner reads the request-level values into every
// comparison; the aggregator keeps windows per value, with bounded cardinality (Config.Top),
// and derives the shadow-version key from each shadow's outcome.
//
// A value that cannot be read (no such header, no such field, an object or array, not a
// number for a bucketed key, a truncated body) is schemas.SegmentUnknown: such requests are
// counted under it, never dropped.
package segment

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
)

// Where a model_version key reads its version.
const (
	VersionChampion = "champion"
	VersionShadow   = "shadow"
)

// Other is the value that gathers a key's values beyond its top N.
const Other = "other"

// DefaultTop and MaxTop bound the values of one key that get windows of their own.
const (
	DefaultTop = 20
	MaxTop     = 100
	MaxKeys    = 8  // schemas.MaxSegments
	MaxBuckets = 32 // bucket edges of one key
)

// Config is an experiment's segments (the experiments file's segments:).
type Config struct {
	// Top is how many values of each key get windows of their own (by traffic); the rest
	// are kept together as Other. 0 means DefaultTop (Defaults fills it).
	Top  int   `yaml:"top"`
	Keys []Key `yaml:"keys"`
}

// Key declares one segment key: exactly one of Header, Pointer or ModelVersion.
type Key struct {
	Name string `yaml:"name"`
	// Header names a request header (any case) whose value is the segment.
	Header string `yaml:"header"`
	// Pointer is an RFC 6901 JSON pointer into the request body ("/inputs/0/data/0"); the
	// value is the scalar there (strings as they are, numbers as Go's %g prints them).
	Pointer string `yaml:"pointer"`
	// Buckets, with Pointer, reads a number and names its bucket: edges strictly increasing,
	// values "< e0", "[e0, e1)", ..., ">= en".
	Buckets []float64 `yaml:"buckets"`
	// ModelVersion segments by the champion's or each shadow's model version.
	ModelVersion string `yaml:"model_version"`
}

// Defaults fills Top.
func (c *Config) Defaults() {
	if c.Top == 0 {
		c.Top = DefaultTop
	}
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	headerRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
)

// credentialHeaders are never segment keys: their values would be stored in clear.
var credentialHeaders = map[string]bool{"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true, "x-api-key": true}

// Validate reports every problem of c (no I/O).
func (c Config) Validate() error {
	var errs []error
	if c.Top < 0 || c.Top > MaxTop {
		errs = append(errs, fmt.Errorf("segments.top must be between 1 and %d (0: %d), got %d", MaxTop, DefaultTop, c.Top))
	}
	if len(c.Keys) > MaxKeys {
		errs = append(errs, fmt.Errorf("segments.keys: %d keys, at most %d", len(c.Keys), MaxKeys))
	}
	seen := map[string]bool{}
	for i, k := range c.Keys {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("segments.keys[%d] (%q): "+format, append([]any{i, k.Name}, args...)...))
		}
		if !nameRE.MatchString(k.Name) {
			bad("name must be 1-64 of a-z, 0-9, _ . - (starting with a letter or digit)")
		}
		if seen[k.Name] {
			bad("defined twice")
		}
		seen[k.Name] = true
		sources := 0
		for _, set := range []bool{k.Header != "", k.Pointer != "", k.ModelVersion != ""} {
			if set {
				sources++
			}
		}
		if sources != 1 {
			bad("names %d fields; exactly one of header, pointer or model_version is required", sources)
		}
		if k.Header != "" {
			if !headerRE.MatchString(k.Header) {
				bad("header %q is not a header name", k.Header)
			} else if credentialHeaders[strings.ToLower(k.Header)] {
				bad("header %q carries credentials; its values would be stored in clear", k.Header)
			}
		}
		if k.Pointer != "" {
			if err := checkPointer(k.Pointer); err != nil {
				bad("pointer: %v", err)
			}
		}
		if len(k.Buckets) > 0 && k.Pointer == "" {
			bad("buckets need a pointer to a number")
		}
		if len(k.Buckets) > MaxBuckets {
			bad("%d bucket edges, at most %d", len(k.Buckets), MaxBuckets)
		}
		for j, e := range k.Buckets {
			if math.IsNaN(e) || math.IsInf(e, 0) {
				bad("bucket edge %d is not finite", j)
			} else if j > 0 && !(e > k.Buckets[j-1]) {
				bad("bucket edges out of order: %g after %g (they must increase strictly)", e, k.Buckets[j-1])
			}
		}
		if k.ModelVersion != "" && k.ModelVersion != VersionChampion && k.ModelVersion != VersionShadow {
			bad("model_version must be %s or %s, got %q", VersionChampion, VersionShadow, k.ModelVersion)
		}
	}
	return errors.Join(errs...)
}

// checkPointer checks RFC 6901 syntax: empty or "/"-separated tokens with ~0 and ~1 escapes.
func checkPointer(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must start with /", p)
	}
	for _, tok := range strings.Split(p[1:], "/") {
		for i := 0; i < len(tok); i++ {
			if tok[i] == '~' && (i+1 == len(tok) || (tok[i+1] != '0' && tok[i+1] != '1')) {
				return fmt.Errorf("%q: ~ must be followed by 0 or 1", p)
			}
		}
	}
	return nil
}

// Bucket names the bucket of x among edges (strictly increasing).
func Bucket(edges []float64, x float64) string {
	if len(edges) == 0 || math.IsNaN(x) {
		return ""
	}
	if x < edges[0] {
		return fmt.Sprintf("< %g", edges[0])
	}
	for i := 1; i < len(edges); i++ {
		if x < edges[i] {
			return fmt.Sprintf("[%g, %g)", edges[i-1], edges[i])
		}
	}
	return fmt.Sprintf(">= %g", edges[len(edges)-1])
}
