package apiv1

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

// The reference vector published with the Standard Webhooks specification.
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func key(t *testing.T, s string) []byte {
	t.Helper()
	k, err := ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignAndVerify(t *testing.T) {
	k := key(t, vectorSecret)
	at := time.Unix(vectorTS, 0)
	if got := Sign(vectorID, at, []byte(vectorBody), [][]byte{k}); got != vectorSig {
		t.Fatalf("signature %s, want %s", got, vectorSig)
	}
	old := key(t, "whsec_"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	h := http.Header{}
	h.Set(HeaderID, vectorID)
	h.Set(HeaderTimestamp, "1614265330")
	h.Set(HeaderSignature, Sign(vectorID, at, []byte(vectorBody), [][]byte{k, old}))
	for _, tc := range []struct {
		name    string
		secrets [][]byte
		body    string
		now     time.Time
		want    error
	}{
		{"current secret", [][]byte{k}, vectorBody, at, nil},
		{"receiver still on the old secret", [][]byte{old}, vectorBody, at, nil},
		{"tampered body", [][]byte{k}, vectorBody + " ", at, ErrNoValidSignature},
		{"unknown secret", [][]byte{key(t, "whsec_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=")}, vectorBody, at, ErrNoValidSignature},
		{"replayed later", [][]byte{k}, vectorBody, at.Add(10 * time.Minute), ErrTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Verify(h, []byte(tc.body), tc.secrets, 5*time.Minute, tc.now); !errors.Is(err, tc.want) {
				t.Fatalf("verify: %v, want %v", err, tc.want)
			}
		})
	}
	if err := Verify(http.Header{}, nil, [][]byte{k}, time.Minute, at); !errors.Is(err, ErrMissingHeaders) {
		t.Fatalf("no headers: %v", err)
	}
	if _, err := ParseSecret("whsec_c2hvcnQ="); err == nil {
		t.Fatal("short secret accepted")
	}
}
