package apiv1

// Webhooks are Standard Webhooks (https://www.standardwebhooks.com): each request carries
// webhook-id (stable per message, for deduplication), webhook-timestamp (of the attempt) and
// webhook-signature ("v1,<base64 HMAC-SHA256 of id.timestamp.body>", one per secret,
// space-separated, so a receiver keeps working while secrets rotate).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names defined by Standard Webhooks.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a Standard Webhooks secret: whsec_ followed by base64 key bytes.
const secretPrefix = "whsec_"

// ParseSecret decodes a "whsec_<base64>" secret (the prefix is optional) into key bytes.
func ParseSecret(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
	if err != nil {
		return nil, fmt.Errorf("webhook secret is not base64 after %q: %w", secretPrefix, err)
	}
	if len(b) < 16 {
		return nil, errors.New("webhook secret shorter than 16 bytes")
	}
	return b, nil
}

// Sign returns the webhook-signature header value for one message and attempt: one "v1,"
// signature per secret.
func Sign(id string, ts time.Time, body []byte, secrets [][]byte) string {
	sigs := make([]string, 0, len(secrets))
	for _, k := range secrets {
		sigs = append(sigs, "v1,"+sign(k, id, ts.Unix(), body))
	}
	return strings.Join(sigs, " ")
}

func sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verification errors.
var (
	ErrMissingHeaders   = errors.New("webhook headers missing")
	ErrTimestamp        = errors.New("webhook timestamp outside tolerance")
	ErrNoValidSignature = errors.New("no valid webhook signature")
)

// Verify checks a received webhook against any of secrets, refusing timestamps more than
// tolerance away from now (replays).
func Verify(h http.Header, body []byte, secrets [][]byte, tolerance time.Duration, now time.Time) error {
	id, tsS, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsS == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsS, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrTimestamp, tsS)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	for _, k := range secrets {
		want := sign(k, id, ts, body)
		for _, s := range strings.Fields(sigs) {
			if v, ok := strings.CutPrefix(s, "v1,"); ok && hmac.Equal([]byte(v), []byte(want)) {
				return nil
			}
		}
	}
	return ErrNoValidSignature
}

// PayloadVersion is the version of Payload; a change that breaks receivers increments it.
const PayloadVersion = 1

// Payload is the JSON body of an alert webhook (Standard Webhooks: type, timestamp, data).
type Payload struct {
	Type      string    `json:"type"` // alert.firing or alert.resolved
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is what an alert webhook says.
type Data struct {
	Version       int      `json:"version"`
	ID            string   `json:"id"` // the webhook-id
	Experiment    string   `json:"experiment"`
	Shadow        string   `json:"shadow"`
	Rule          Rule     `json:"rule"`
	State         State    `json:"state"`
	PreviousState State    `json:"previous_state"`
	Value         *float64 `json:"value"`
	NoiseFloor    *float64 `json:"noise_floor"`
	Interval      Interval `json:"interval"` // the rule's interval: a FAIL means it lies beyond the threshold
	Status        string   `json:"status"`   // the rule's status: FAIL while firing
	Reason        string   `json:"reason"`
	Samples       uint64   `json:"samples"`
	Window        Range    `json:"window"`
	Links         Links    `json:"links"`
}

// Rule is the alert rule a webhook is about, as configured (docs/aggregator.md).
type Rule struct {
	Name       string  `json:"name"`
	Metric     Metric  `json:"metric"`
	Comparator string  `json:"comparator"` // >=, >, <=, <
	Threshold  float64 `json:"threshold"`
	MinSamples uint64  `json:"min_samples"`
	For        int     `json:"for"` // consecutive evaluations; 1 fires at once
	Severity   string  `json:"severity"`
	Margin     float64 `json:"margin"` // how far beyond the noise baseline the candidate must be
}

// Links point to the read API for the alert's numbers.
type Links struct {
	Stats   string `json:"stats"`
	Alerts  string `json:"alerts"`
	History string `json:"history"`
}
