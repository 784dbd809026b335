package redact

import (
	"errors"
	"strings"
	"testing"
)

func TestApply(t *testing.T) {
	key := []byte("k")
	tests := []struct {
		name         string
		remove, hash []string
		in           string
		want         string
		wantErr      error
	}{
		{"no rules leave bytes alone", nil, nil, `{"b":1,  "a":2}`, `{"b":1,  "a":2}`, nil},
		{"remove a field", []string{"/user/ssn"}, nil, `{"user":{"ssn":"123-45-6789","age":41}}`, `{"user":{"age":41}}`, nil},
		{"wildcard over an array", []string{"/inputs/*/parameters"}, nil, `{"inputs":[{"name":"a","parameters":{"email":"x@y"}},{"name":"b"}]}`, `{"inputs":[{"name":"a"},{"name":"b"}]}`, nil},
		{"hash keeps joinability", nil, []string{"/email"}, `{"email":"a@b.c","n":1}`, `{"email":"hmac-sha256:`, nil},
		{"missing path is fine", []string{"/nope/deeper"}, nil, `{"a":1}`, `{"a":1}`, nil},
		{"numbers keep precision", []string{"/x"}, nil, `{"x":1,"big":12345678901234567890}`, `{"big":12345678901234567890}`, nil},
		{"truncated json", []string{"/x"}, nil, `{"x":"abc`, "", ErrNotJSON},
		{"not json", nil, []string{"/x"}, `name=bob`, "", ErrNotJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compile(tc.remove, tc.hash, key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Apply([]byte(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && !strings.HasPrefix(string(got), tc.want) {
				t.Fatalf("got %s, want prefix %s", got, tc.want)
			}
		})
	}
	r, _ := Compile(nil, []string{"/email"}, key)
	a, _ := r.Apply([]byte(`{"email":"a@b.c"}`))
	b, _ := r.Apply([]byte(`{"email":"a@b.c","other":true}`))
	if !strings.Contains(string(b), strings.TrimSuffix(strings.TrimPrefix(string(a), `{"email":`), "}")) {
		t.Fatalf("equal values hash differently: %s vs %s", a, b)
	}
	if strings.Contains(string(a), "a@b.c") {
		t.Fatal("hashed value still readable")
	}
	if _, err := Compile(nil, []string{"/x"}, nil); err == nil {
		t.Fatal("hash rules without a key must be refused")
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"a":[{"b":1}],"c":"d"}`))
	r, _ := Compile([]string{"/a/*/b"}, []string{"/c"}, []byte("k"))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := r.Apply(body)
		if err == nil && strings.Contains(string(out), `"c":"d"`) {
			t.Fatalf("value at /c survived: %s", out)
		}
	})
}
