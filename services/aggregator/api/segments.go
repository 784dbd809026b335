package api

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// rankingAlpha is the level of a segment ranking, shared by its rows (stats.RankSegments).
const rankingAlpha = 0.05

// segments serves GET /api/v1/experiments/{e}/segments?key=&metric=&top=&from=&to=: each
// shadow's values of one segment key (the first key when none is named) ranked by their
// contribution to metric (default psi: where the shadow's predictions drift from the
// champion's).
func (a *API) segments(w http.ResponseWriter, r *http.Request) {
	exp := r.PathValue("experiment")
	from, to, err := a.timeRange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	metric := stats.Metric(q.Get("metric"))
	if metric == "" {
		metric = stats.MetricPSI
	}
	if !slices.Contains(stats.Metrics, metric) {
		a.fail(w, r, fmt.Errorf("%w: unknown metric %q (one of %v)", errBadRequest, metric, stats.Metrics))
		return
	}
	top := segment.DefaultTop
	if s := q.Get("top"); s != "" {
		if top, err = strconv.Atoi(s); err != nil || top < 1 || top > segment.MaxTop {
			a.fail(w, r, fmt.Errorf("%w: top must be between 1 and %d", errBadRequest, segment.MaxTop))
			return
		}
	}
	keys, err := a.store.SegmentKeys(r.Context(), exp)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	key := q.Get("key")
	if key == "" && len(keys) > 0 {
		key = keys[0]
	}
	out := apiv1.SegmentsResponse{Experiment: exp, From: from, To: to, Key: key, Keys: keys, Metric: metric, Top: top, Shadows: []apiv1.SegmentRanking{}}
	if keys == nil {
		out.Keys = []string{}
	}
	if key != "" {
		ws, err := a.store.RangeSegments(r.Context(), exp, key, from, to)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out.Shadows = stats.RankSegments(ws, metric, top, rankingAlpha, a.opts)
	}
	writeJSON(w, http.StatusOK, out)
}
