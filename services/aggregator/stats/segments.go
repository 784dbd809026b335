package stats

import (
	"math"
	"sort"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// LowerIsWorse reports whether a smaller value of m means a worse shadow.
func LowerIsWorse(m Metric) bool {
	return m == MetricAccuracyDiff || m == MetricCoverage || m == MetricChiSquareP
}

// RankSegments ranks, for every shadow of ws (shadow → segment value → merged window over
// the range), the values of one segment key by their contribution to metric m (see
// apiv1.SegmentRow): values beyond the top by requests are merged into segment.Other
// (unknown always stays apart), intervals are at level alpha divided by the number of
// rows, and a candidate's contributions are judged against the noise baseline's in the same
// segment. Shadows are sorted as Report sorts them.
func RankSegments(ws map[string]map[string]*window.Window, m Metric, top int, alpha float64, o Options) []apiv1.SegmentRanking {
	type shadowRows struct {
		name, role string
		values     map[string]*window.Window
	}
	var shadows []shadowRows
	baseline := ""
	for name, vs := range ws {
		vs = keepTop(vs, top)
		role := ""
		for _, w := range vs {
			if w.Role != "" {
				role = w.Role
			}
		}
		shadows = append(shadows, shadowRows{name, role, vs})
	}
	sort.Slice(shadows, func(i, j int) bool {
		bi, bj := shadows[i].role == schemas.RoleNoiseBaseline, shadows[j].role == schemas.RoleNoiseBaseline
		if bi != bj {
			return bj
		}
		return shadows[i].name < shadows[j].name
	})
	for _, s := range shadows {
		if s.role == schemas.RoleNoiseBaseline {
			baseline = s.name
			break
		}
	}
	contributions := func(vs map[string]*window.Window) (map[string]apiv1.SegmentRow, *Estimate) {
		level := alpha / float64(max(1, len(vs)))
		rows := map[string]apiv1.SegmentRow{}
		var total uint64
		all := window.New()
		for v, w := range vs {
			st := Compute(w, o)
			row := apiv1.SegmentRow{Value: v, Requests: w.Total, Stats: st.Stats}
			if e, ok := st.Estimate(m, level); ok {
				row.Metric = &e
				total += e.N
			}
			rows[v] = row
			_ = all.Merge(w)
		}
		for v, row := range rows {
			if row.Metric == nil || total == 0 {
				continue
			}
			share := float64(row.Metric.N) / float64(total)
			c := *row.Metric
			c.Value, c.Low, c.High = share*c.Value, scale(share, c.Low), scale(share, c.High)
			row.Share, row.Contribution = share, &c
			rows[v] = row
		}
		overall, ok := Compute(all, o).Estimate(m, alpha)
		if !ok {
			return rows, nil
		}
		return rows, &overall
	}
	var floor map[string]apiv1.SegmentRow
	if baseline != "" {
		floor, _ = contributions(ws[baseline])
	}
	out := make([]apiv1.SegmentRanking, 0, len(shadows))
	for _, s := range shadows {
		rows, overall := contributions(s.values)
		r := apiv1.SegmentRanking{Shadow: s.name, Role: s.role, Overall: overall, Rows: make([]apiv1.SegmentRow, 0, len(rows))}
		if s.name != baseline {
			r.Baseline = baseline
		}
		for v, row := range rows {
			if s.name != baseline && baseline != "" {
				if f, ok := floor[v]; ok && f.Contribution != nil {
					fc := *f.Contribution
					row.Floor = &fc
				}
			}
			// Only an interval valid at every look decides (PSI and KS have none: ranked by value).
			row.Differs = Sequential(m) && differs(m, row.Contribution, row.Floor, baseline != "" && s.name != baseline)
			r.Rows = append(r.Rows, row)
		}
		sort.Slice(r.Rows, func(i, j int) bool {
			bi, bj := badness(m, r.Rows[i].Contribution), badness(m, r.Rows[j].Contribution)
			if bi != bj {
				return bi > bj
			}
			if vi, vj := pointBadness(m, r.Rows[i].Contribution), pointBadness(m, r.Rows[j].Contribution); vi != vj {
				return vi > vj
			}
			if r.Rows[i].Requests != r.Rows[j].Requests {
				return r.Rows[i].Requests > r.Rows[j].Requests
			}
			return r.Rows[i].Value < r.Rows[j].Value
		})
		out = append(out, r)
	}
	return out
}

// scale multiplies an interval bound by a share, keeping infinite bounds infinite.
func scale(share, x float64) float64 {
	if math.IsInf(x, 0) {
		return x
	}
	return share * x
}

// badness orders contributions, surest worst first: the bound nearest the good side.
func badness(m Metric, c *Estimate) float64 {
	switch {
	case c == nil:
		return math.Inf(-1)
	case LowerIsWorse(m):
		return -c.High
	}
	return c.Low
}

// pointBadness breaks ties of badness: the contribution's value, worst first.
func pointBadness(m Metric, c *Estimate) float64 {
	switch {
	case c == nil:
		return math.Inf(-1)
	case LowerIsWorse(m):
		return -c.Value
	}
	return c.Value
}

// differs reports whether contribution c lies wholly on the worse side of the floor's
// interval (of zero when there is no baseline; never for the baseline itself).
func differs(m Metric, c, floor *Estimate, hasFloor bool) bool {
	if c == nil || (hasFloor && floor == nil) {
		return false
	}
	lo, hi := 0.0, 0.0
	if floor != nil {
		lo, hi = floor.Low, floor.High
	}
	if LowerIsWorse(m) {
		return c.High < lo
	}
	return c.Low > hi
}

// keepTop merges the values of vs beyond the top by requests into segment.Other; unknown
// and Other themselves are kept apart and take no place among the top.
func keepTop(vs map[string]*window.Window, top int) map[string]*window.Window {
	named := make([]string, 0, len(vs))
	for v := range vs {
		if v != schemas.SegmentUnknown && v != segment.Other {
			named = append(named, v)
		}
	}
	if len(named) <= top {
		return vs
	}
	sort.Slice(named, func(i, j int) bool {
		if vs[named[i]].Total != vs[named[j]].Total {
			return vs[named[i]].Total > vs[named[j]].Total
		}
		return named[i] < named[j]
	})
	out := make(map[string]*window.Window, top+2)
	for _, v := range named[:top] {
		out[v] = vs[v]
	}
	other := window.New()
	if w := vs[segment.Other]; w != nil {
		_ = other.Merge(w)
	}
	for _, v := range named[top:] {
		_ = other.Merge(vs[v])
	}
	out[segment.Other] = other
	if w := vs[schemas.SegmentUnknown]; w != nil {
		out[schemas.SegmentUnknown] = w
	}
	return out
}
