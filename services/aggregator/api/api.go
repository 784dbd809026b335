// Package api serves the aggregator's read API (JSON over HTTP, under /api/v1/): experiments,
// statistics over any time range with the noise floor, per-window series for plots, the example
// requests behind the windows (the one payload-bearing endpoint), alert states and their
// history. Its endpoints, parameters and answers are the contract in
// schemas/apiv1. It only reads; every answer is computed from the windows and alert tables in
// Postgres, so any replica answers the same. Failures' details are logged, not returned.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Store is what the API reads windows from (*store.Store implements it).
type Store interface {
	Experiments(ctx context.Context) (map[string][]store.Shadow, error)
	Range(ctx context.Context, experiment string, from, to time.Time) (map[string]*window.Window, error)
	Series(ctx context.Context, experiment, shadow string, width time.Duration, from, to time.Time) ([]store.Window, error)
	Width(from, to time.Time, maxPoints int) time.Duration
	Levels() []store.Level
	FirstWindow(ctx context.Context, experiment string) (time.Time, bool, error)
	RangeSegments(ctx context.Context, experiment, key string, from, to time.Time) (map[string]map[string]*window.Window, error)
	SegmentKeys(ctx context.Context, experiment string) ([]string, error)
}

// API serves the read endpoints.
type API struct {
	store  Store
	db     alert.Querier
	rules  func() *alert.Rules
	opts   stats.Options
	token  string
	logger *slog.Logger
	now    func() time.Time
}

// New returns the API; rules give the verdicts of the stats endpoint. A non-empty token
// requires "Authorization: Bearer <token>" on every request.
func New(s Store, db alert.Querier, rules func() *alert.Rules, opts stats.Options, token string, logger *slog.Logger, now func() time.Time) *API {
	return &API{store: s, db: db, rules: rules, opts: opts, token: token, logger: logger, now: now}
}

// Register adds the endpoints to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/experiments", a.auth(a.experiments))
	mux.HandleFunc("GET /api/v1/experiments/{experiment}/stats", a.auth(a.stats))
	mux.HandleFunc("GET /api/v1/experiments/{experiment}/windows", a.auth(a.windows))
	mux.HandleFunc("GET /api/v1/experiments/{experiment}/distribution", a.auth(a.distribution))
	mux.HandleFunc("GET /api/v1/experiments/{experiment}/segments", a.auth(a.segments))
	// Payload-bearing: examples carry request and response bodies. Kept on a path of its own
	// so that access to it can be granted apart from the statistics.
	mux.HandleFunc("GET /api/v1/experiments/{experiment}/examples", a.auth(a.examples))
	mux.HandleFunc("GET /api/v1/alerts", a.auth(a.alerts))
	mux.HandleFunc("GET /api/v1/alerts/history", a.auth(a.history))
}

func (a *API) auth(h http.HandlerFunc) http.HandlerFunc {
	if a.token == "" {
		return h
	}
	want := []byte("Bearer " + a.token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="understudy"`)
			writeJSON(w, http.StatusUnauthorized, apiv1.ErrorResponse{Error: "missing or wrong bearer token"})
			return
		}
		h(w, r)
	}
}

// errBadRequest marks errors caused by the request's parameters.
var errBadRequest = errors.New("bad request")

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errBadRequest) {
		writeJSON(w, http.StatusBadRequest, apiv1.ErrorResponse{Error: err.Error()})
		return
	}
	a.logger.Error("api", "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, apiv1.ErrorResponse{Error: "internal error"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// parseTime reads an RFC 3339 time or a duration before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q is neither an RFC 3339 time nor a duration", errBadRequest, s)
	}
	return t, nil
}

func (a *API) timeRange(r *http.Request) (from, to time.Time, err error) {
	now := a.now()
	to = now
	if s := r.URL.Query().Get("to"); s != "" {
		if to, err = parseTime(s, now); err != nil {
			return
		}
	}
	from = to.Add(-time.Hour)
	if s := r.URL.Query().Get("from"); s != "" {
		if from, err = parseTime(s, now); err != nil {
			return
		}
	}
	if !from.Before(to) {
		err = fmt.Errorf("%w: from must be before to", errBadRequest)
	}
	return from.UTC(), to.UTC(), err
}

func (a *API) experiments(w http.ResponseWriter, r *http.Request) {
	m, err := a.store.Experiments(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := apiv1.ExperimentsResponse{Experiments: []apiv1.Experiment{}}
	for _, n := range store.ExperimentNames(m) {
		counts, err := store.Counts(r.Context(), a.db, n)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out.Experiments = append(out.Experiments, apiv1.Experiment{Name: n, Shadows: m[n], Comparisons: counts})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	exp := r.PathValue("experiment")
	from, to, err := a.timeRange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ws, err := a.store.Range(r.Context(), exp, from, to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	states, err := alert.States(r.Context(), a.db, exp, "")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rep := stats.Report(ws, a.opts)
	if states == nil {
		states = []alert.Current{}
	}
	first, ok, err := a.store.FirstWindow(r.Context(), exp)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rs := a.rules()
	j := alert.Judgement{Decision: rs.Decision(exp), Firing: map[string]bool{}}
	if ok {
		if first.Before(from) {
			first = from
		}
		end := to
		if now := a.now(); now.Before(end) {
			end = now
		}
		j.Observed = end.Sub(first)
	}
	verdicts := []alert.Verdict{}
	for _, r := range rep {
		if r.Role != schemas.RoleNoiseBaseline && r.Shadow != "" {
			j.Firing = map[string]bool{}
			for _, st := range states {
				if st.Shadow == r.Shadow && st.State == alert.StateFiring {
					j.Firing[st.Rule] = true
				}
			}
			verdicts = append(verdicts, alert.Judge(rs.For(exp), r, j))
		}
	}
	out := apiv1.StatsResponse{Experiment: exp, From: from, To: to, Shadows: make([]apiv1.ShadowReport, 0, len(rep)), Verdicts: verdicts, Alerts: states}
	for _, r := range rep {
		out.Shadows = append(out.Shadows, r.API())
	}
	writeJSON(w, http.StatusOK, out)
}

// maxPoints bounds a series when no width is given: the finest stored width that keeps the
// range within it is used.
const maxPoints = 2000

func (a *API) windows(w http.ResponseWriter, r *http.Request) {
	exp := r.PathValue("experiment")
	from, to, err := a.timeRange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	width := a.store.Width(from, to, maxPoints)
	if s := r.URL.Query().Get("width"); s != "" {
		d, perr := time.ParseDuration(s)
		ok := false
		for _, l := range a.store.Levels() {
			ok = ok || (perr == nil && l.Width == d)
		}
		if !ok {
			a.fail(w, r, fmt.Errorf("%w: width %q is not a stored window width", errBadRequest, s))
			return
		}
		width = d
	}
	ws, err := a.store.Series(r.Context(), exp, r.URL.Query().Get("shadow"), width, from.Truncate(width), to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	opts := a.opts
	if s := r.URL.Query().Get("min_labels"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.fail(w, r, fmt.Errorf("%w: min_labels must be a non-negative integer", errBadRequest))
			return
		}
		opts.MinLabels = n
	}
	out := apiv1.SeriesResponse{Experiment: exp, From: from, To: to, Width: width.String(), Points: make([]apiv1.Point, 0, len(ws))}
	for _, x := range ws {
		out.Points = append(out.Points, apiv1.Point{Shadow: x.Shadow, Role: x.Data.Role, Start: x.Start, Stats: stats.Compute(x.Data, opts).Stats})
	}
	writeJSON(w, http.StatusOK, out)
}

// examples answers the requests kept to explain the windows starting in the range (from is
// aligned down to the base width), optionally of one shadow and kind.
func (a *API) examples(w http.ResponseWriter, r *http.Request) {
	exp, q := r.PathValue("experiment"), r.URL.Query()
	from, to, err := a.timeRange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	kind := q.Get("kind")
	if kind != "" && !slices.Contains(window.ExampleKinds, kind) {
		a.fail(w, r, fmt.Errorf("%w: kind %q is not one of %v", errBadRequest, kind, window.ExampleKinds))
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			a.fail(w, r, fmt.Errorf("%w: limit must be 1..1000", errBadRequest))
			return
		}
	}
	from = from.Truncate(a.store.Levels()[0].Width)
	exs, err := store.Examples(r.Context(), a.db, store.ExampleFilter{Experiment: exp, Shadow: q.Get("shadow"), Kind: kind, From: from, To: to, Limit: limit})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.ExamplesResponse{Experiment: exp, From: from, To: to, Examples: exs})
}

func (a *API) distribution(w http.ResponseWriter, r *http.Request) {
	exp, shadow := r.PathValue("experiment"), r.URL.Query().Get("shadow")
	from, to, err := a.timeRange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	bins := 40
	if s := r.URL.Query().Get("bins"); s != "" {
		if bins, err = strconv.Atoi(s); err != nil || bins < 2 || bins > 500 {
			a.fail(w, r, fmt.Errorf("%w: bins must be 2..500", errBadRequest))
			return
		}
	}
	ws, err := a.store.Range(r.Context(), exp, from, to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := apiv1.Distribution{Experiment: exp, Shadow: shadow, Champion: []float64{}, ShadowData: []float64{}}
	if win := ws[shadow]; win != nil {
		fillDistribution(&out, win, bins)
	}
	writeJSON(w, http.StatusOK, out)
}

// fillDistribution fills d with w's distributions in bins bins.
func fillDistribution(d *apiv1.Distribution, w *window.Window, bins int) {
	c, s := w.Champion, w.Shadow
	switch {
	case c.Predictions.Count() > 0 && s.Predictions.Count() > 0:
		d.Kind = "number"
		lo := min(c.Predictions.Quantile(0.001), s.Predictions.Quantile(0.001))
		hi := max(c.Predictions.Quantile(0.999), s.Predictions.Quantile(0.999))
		if !(hi > lo) {
			hi = lo + 1
		}
		step := (hi - lo) / float64(bins)
		prevC, prevS := c.Predictions.CDF(lo), s.Predictions.CDF(lo)
		for i := 0; i <= bins; i++ {
			d.Edges = append(d.Edges, lo+float64(i)*step)
		}
		for i := 1; i <= bins; i++ {
			cc, sc := c.Predictions.CDF(d.Edges[i]), s.Predictions.CDF(d.Edges[i])
			d.Champion, d.ShadowData = append(d.Champion, cc-prevC), append(d.ShadowData, sc-prevS)
			prevC, prevS = cc, sc
		}
		d.Champion, d.ShadowData = append(d.Champion, d.Champion[bins-1]), append(d.ShadowData, d.ShadowData[bins-1])
	case c.Classes.Total() > 0 || s.Classes.Total() > 0:
		d.Kind = "class"
		names := map[string]bool{}
		for k := range c.Classes {
			names[k] = true
		}
		for k := range s.Classes {
			names[k] = true
		}
		for k := range names {
			d.Classes = append(d.Classes, k)
		}
		sort.Strings(d.Classes)
		share := func(cl map[string]uint64, total uint64, k string) float64 {
			if total == 0 {
				return 0
			}
			return float64(cl[k]) / float64(total)
		}
		for _, k := range d.Classes {
			d.Champion = append(d.Champion, share(c.Classes, c.Classes.Total(), k))
			d.ShadowData = append(d.ShadowData, share(s.Classes, s.Classes.Total(), k))
		}
	}
}

func (a *API) alerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	states, err := alert.States(r.Context(), a.db, q.Get("experiment"), alert.State(q.Get("state")))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if states == nil {
		states = []alert.Current{}
	}
	writeJSON(w, http.StatusOK, apiv1.AlertsResponse{Alerts: states})
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since := time.Time{}
	if s := q.Get("from"); s != "" {
		t, err := parseTime(s, a.now())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		since = t
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			a.fail(w, r, fmt.Errorf("%w: limit must be 1..10000", errBadRequest))
			return
		}
		limit = n
	}
	ts, err := alert.History(r.Context(), a.db, q.Get("experiment"), since, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ts == nil {
		ts = []alert.Transition{}
	}
	writeJSON(w, http.StatusOK, apiv1.HistoryResponse{Transitions: ts})
}
