// Package demo holds what `understudy demo` and the end-to-end tests need besides the
// pipeline: small Open Inference Protocol v2 model servers and a traffic generator.
package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"
)

// Model is a logistic-regression model served over the Open Inference Protocol v2. Its
// answers are a pure function of the request body, so tests can compute the exact bytes a
// caller must receive.
type Model struct {
	Name    string
	Version string
	Weights []float64
	Bias    float64
	// Delay is added to every answer (to make a shadow slower than the champion).
	Delay time.Duration
	// DriftAbove shifts the score by DriftShift for inputs whose first feature exceeds it
	// (a segment on which the candidate behaves differently); zero disables drift.
	DriftAbove, DriftShift float64
}

// Champion returns the demo's production model.
func Champion() *Model {
	return &Model{Name: "fraud", Version: "6", Weights: []float64{1.2, -0.8, 0.5, 0.3}, Bias: -0.2}
}

// Candidate returns the demo's candidate: close to the champion, a little slower, and drifted
// on the segment where the first feature exceeds 1.
func Candidate() *Model {
	return &Model{
		Name: "fraud", Version: "7", Weights: []float64{1.25, -0.75, 0.5, 0.35}, Bias: -0.25,
		Delay: 2 * time.Millisecond, DriftAbove: 1, DriftShift: 0.15,
	}
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
	return math.Round(p*1e6) / 1e6
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
	if m.Delay > 0 {
		time.Sleep(m.Delay)
	}
	code, out := m.Respond(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(out)
}
