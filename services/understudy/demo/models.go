// Package demo holds what `understudy demo` and the end-to-end tests need besides the
// pipeline: small Open Inference Protocol v2 model servers and a traffic generator.
package demo

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/understudy-ml/understudy/services/platform/segment"
)

// Model is a logistic-regression model served over the Open Inference Protocol v2. Its
// answers are a pure function of the request body, so tests can compute the exact bytes a
// caller must receive.
type Model struct {
	Name    string
	Version string
	Weights []float64
	Bias    float64
	// Service, when set, is the median of a service time added to every answer: log-normal
	// with σ = 0.25 (p99 about 1.8 × the median), a deterministic function of the request body,
	// so every copy of a model takes the same time on the same request. Slowdown (0 means 1)
	// scales it: 1.3 makes a model 30 % slower at every quantile.
	Service  time.Duration
	Slowdown float64
	// DriftAbove shifts the score by DriftShift for inputs whose first feature exceeds it
	// (a segment on which the candidate behaves differently); zero disables drift.
	DriftAbove, DriftShift float64
	// Jitter adds a deterministic perturbation of at most ±Jitter to every score (a copy of a
	// model that is not bit-for-bit reproducible, like most served models).
	Jitter float64
}

// Truth returns the process the demo's labels come from: a request's label is 1 with the
// probability Truth().Score(features). It is never served.
func Truth() *Model {
	return &Model{Name: "truth", Weights: []float64{1.6, -1.1, 0.7, 0.4}, Bias: -0.4}
}

// Champion returns the demo's production model: its decision boundary is off the truth's, so it
// is about 77 % accurate.
func Champion() *Model {
	return &Model{Name: "fraud", Version: "6", Weights: []float64{1.2, -0.5, 0.5, 0.3}, Bias: 0.1}
}

// ServiceTime is the median service time the demo gives its models (see Model.Service): large
// next to the few milliseconds a local call adds at p99 on a busy machine, so a model 30 %
// slower to compute measures close to 30 % slower.
const ServiceTime = 50 * time.Millisecond

// Candidate returns the demo's candidate: closer to the truth (about 2 points more accurate),
// 50 % slower to compute, and drifted on the segment where the first feature exceeds 1 (its scores
// there are 0.15 higher, which moves the prediction distribution without changing many
// decisions).
func Candidate() *Model {
	return &Model{
		Name: "fraud", Version: "7", Weights: []float64{1.55, -1.05, 0.7, 0.4}, Bias: -0.4,
		Slowdown: 1.5, DriftAbove: 1, DriftShift: 0.15,
	}
}

// Copy returns an exact copy of the champion (same answers, same server code) to run as the
// candidate: an A/A experiment, which must never FAIL.
func Copy() *Model { return Champion() }

// Worse returns a candidate about 2 points less accurate than the champion (74.6 % against
// 76.8 % on the demo's traffic) and 30 % slower: its service time (see Model.Service) is 1.3 ×
// the champion's on every request.
func Worse() *Model {
	return &Model{Name: "fraud", Version: "7-worse", Weights: []float64{1.0, -0.32, 0.45, 0.28}, Bias: 0.22, Slowdown: 1.3}
}

// NoiseCopy returns a second copy of the champion whose scores differ by at most 0.002: the
// noise baseline, which measures how much two "identical" models disagree.
func NoiseCopy() *Model {
	m := Champion()
	m.Jitter = 0.002
	return m
}

// Label returns the ground truth of request i of the stream seeded by seed (see NewRequest):
// 1 with the truth's probability for its features, else 0.
func Label(seed uint64, i int) float64 {
	x := NewRequest(seed, i).Features
	r := rand.New(rand.NewPCG(seed^0x6c6162656c, uint64(i)))
	if r.Float64() < Truth().Score(x) {
		return 1
	}
	return 0
}

type inferRequest struct {
	ID     string `json:"id,omitempty"`
	Inputs []struct {
		Name     string    `json:"name"`
		Shape    []int     `json:"shape"`
		Datatype string    `json:"datatype"`
		Data     []float64 `json:"data"`
	} `json:"inputs"`
}

type output struct {
	Name     string    `json:"name"`
	Shape    []int     `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float64 `json:"data"`
}

type inferResponse struct {
	ModelName    string   `json:"model_name"`
	ModelVersion string   `json:"model_version"`
	ID           string   `json:"id,omitempty"`
	Outputs      []output `json:"outputs"`
}

// Respond returns the status and body the model answers to body.
func (m *Model) Respond(body []byte) (int, []byte) {
	var req inferRequest
	if err := json.Unmarshal(body, &req); err != nil || len(req.Inputs) == 0 || len(req.Inputs[0].Data) != len(m.Weights) {
		return http.StatusBadRequest, []byte(`{"error":"want one input of ` + fmt.Sprint(len(m.Weights)) + ` features"}`)
	}
	x := req.Inputs[0].Data
	score := m.Score(x)
	out, _ := json.Marshal(inferResponse{
		ModelName: m.Name, ModelVersion: m.Version, ID: req.ID,
		Outputs: []output{{Name: "score", Shape: []int{1}, Datatype: "FP64", Data: []float64{score}}},
	})
	return http.StatusOK, out
}

// Score returns the model's probability for features x.
func (m *Model) Score(x []float64) float64 {
	z := m.Bias
	for i, w := range m.Weights {
		z += w * x[i]
	}
	p := 1 / (1 + math.Exp(-z))
	if m.DriftAbove != 0 && x[0] > m.DriftAbove {
		p = math.Min(1, p+m.DriftShift)
	}
	if m.Jitter > 0 {
		h := fnv.New64a()
		for _, v := range x {
			_, _ = h.Write([]byte(strconv.FormatFloat(v, 'g', -1, 64)))
		}
		u := float64(h.Sum64()%2001)/1000 - 1 // [-1, 1]
		p = math.Min(1, math.Max(0, p+u*m.Jitter))
	}
	return math.Round(p*1e6) / 1e6
}

// serviceSigma is the log-normal σ of Model.Service.
const serviceSigma = 0.25

// ServiceTime is the service time m adds to its answer to body (see Model.Service).
func (m *Model) ServiceTime(body []byte) time.Duration {
	if m.Service <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write(body)
	u := (float64(h.Sum64()>>11) + 0.5) / (1 << 53) // (0, 1)
	z := math.Sqrt2 * math.Erfinv(2*u-1)            // standard normal
	slow := m.Slowdown
	if slow == 0 {
		slow = 1
	}
	return time.Duration(slow * float64(m.Service) * math.Exp(serviceSigma*z))
}

// ServeHTTP answers POST /v2/models/{name}/infer.
func (m *Model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if d := m.ServiceTime(body); d > 0 {
		time.Sleep(d)
	}
	code, out := m.Respond(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

// Segments are the demo experiment's segment keys: its first feature in buckets around the
// candidate's drift threshold (DriftAbove, 1), and each shadow's model version.
func Segments() []segment.Key {
	return []segment.Key{
		{Name: "feature_0", Pointer: "/inputs/0/data/0", Buckets: []float64{-1, 0, 1}},
		{Name: "shadow_version", ModelVersion: segment.VersionShadow},
	}
}
