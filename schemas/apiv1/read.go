package apiv1

import "time"

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Shadow is one shadow of an experiment with windows.
type Shadow struct {
	Name  string    `json:"name"`
	Role  string    `json:"role"`
	First time.Time `json:"first_window"`
	Last  time.Time `json:"last_window"`
	Total int64     `json:"comparisons"`
}

// Experiment is an experiment with windows, its shadows, and its comparisons stored by
// the joiner's status ("labeled" counts labeled comparisons, which follow final ones).
type Experiment struct {
	Name        string           `json:"name"`
	Shadows     []Shadow         `json:"shadows"`
	Comparisons map[string]int64 `json:"comparisons"`
}

// ExperimentsResponse is GET /api/v1/experiments, sorted by name.
type ExperimentsResponse struct {
	Experiments []Experiment `json:"experiments"`
}

// StatsResponse is GET /api/v1/experiments/{experiment}/stats: each shadow's statistics over
// the range, each candidate's verdict and the experiment's alert states.
type StatsResponse struct {
	Experiment string         `json:"experiment"`
	From       time.Time      `json:"from"`
	To         time.Time      `json:"to"`
	Shadows    []ShadowReport `json:"shadows"`
	Verdicts   []Verdict      `json:"verdicts"`
	Alerts     []Current      `json:"alerts"`
}

// Point is one window of a series with its statistics.
type Point struct {
	Shadow string    `json:"shadow"`
	Role   string    `json:"role"`
	Start  time.Time `json:"start"`
	Stats  Stats     `json:"stats"`
}

// SeriesResponse is GET /api/v1/experiments/{experiment}/windows.
type SeriesResponse struct {
	Experiment string    `json:"experiment"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Width      string    `json:"width"`
	Points     []Point   `json:"points"`
}

// Distribution is GET /api/v1/experiments/{experiment}/distribution: the champion's and one
// shadow's prediction distributions over the range, rebuilt from the sketches. For numbers,
// Edges are bins+1 equally spaced edges over both distributions' 0.1–99.9 % quantiles and
// Champion, ShadowData the share of predictions in each bin (a final repeated value closes
// the step); for classes, Classes are the class names and the values their shares.
type Distribution struct {
	Experiment string    `json:"experiment"`
	Shadow     string    `json:"shadow"`
	Kind       string    `json:"kind"` // number, class or "" (no predictions)
	Edges      []float64 `json:"edges,omitempty"`
	Classes    []string  `json:"classes,omitempty"`
	Champion   []float64 `json:"champion_shares"`
	ShadowData []float64 `json:"shadow_shares"`
}

// AlertsResponse is GET /api/v1/alerts.
type AlertsResponse struct {
	Alerts []Current `json:"alerts"`
}

// HistoryResponse is GET /api/v1/alerts/history, oldest first.
type HistoryResponse struct {
	Transitions []Transition `json:"transitions"`
}
