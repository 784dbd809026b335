package servicetest

import (
	"strings"
	"testing"
)

// ConfigCase is one row of a Validate table test.
type ConfigCase[C any] struct {
	Name   string
	Change func(c *C) // applied to a fresh valid configuration
	// Want lists what the error must name, each of them (one error reports every problem);
	// none means the changed configuration is valid.
	Want []string
	// NotWant lists what the error must never contain (a secret, a URL).
	NotWant []string
}

// CheckValidate checks that valid() passes validate, then applies each case's change to a
// fresh valid() and checks what validate reports.
func CheckValidate[C any](t *testing.T, valid func() C, validate func(*C) error, cases []ConfigCase[C]) {
	t.Helper()
	base := valid()
	if err := validate(&base); err != nil {
		t.Fatalf("the valid configuration does not validate: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			c := valid()
			tc.Change(&c)
			err := validate(&c)
			if len(tc.Want) == 0 && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if len(tc.Want) > 0 && err == nil {
				t.Fatalf("Validate() = nil, want an error naming %q", tc.Want)
			}
			for _, w := range tc.Want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v; it does not name %q", err, w)
				}
			}
			for _, nw := range tc.NotWant {
				if err != nil && strings.Contains(err.Error(), nw) {
					t.Errorf("Validate() = %v; it contains %q", err, nw)
				}
			}
		})
	}
}
