package apiv1

import "time"

// SegmentsResponse is GET /api/v1/experiments/{e}/segments?key=&metric=&from=&to=&top=:
// for each shadow, the values of one segment key ranked by their contribution to the
// shadow's difference from the champion in Metric.
type SegmentsResponse struct {
	Experiment string           `json:"experiment"`
	From       time.Time        `json:"from"`
	To         time.Time        `json:"to"`
	Key        string           `json:"key"`
	Keys       []string         `json:"keys"` // every segment key with windows in the range
	Metric     Metric           `json:"metric"`
	Top        int              `json:"top"`
	Shadows    []SegmentRanking `json:"shadows"`
}

// SegmentRanking ranks one shadow's segment values, most contributing first.
type SegmentRanking struct {
	Shadow   string       `json:"shadow"`
	Role     string       `json:"role"`
	Baseline string       `json:"baseline,omitempty"` // the noise-baseline shadow whose contributions are the floor
	Overall  *Estimate    `json:"overall,omitempty"`  // the metric over all of the shadow's traffic
	Rows     []SegmentRow `json:"rows"`
}

// SegmentRow is one segment value of a ranking. Contribution is the segment's part of the
// overall metric: its share of the metric's samples times the metric in the segment, so that
// the contributions of a key's values add up to the overall metric (for metrics that are
// means over requests); its interval is the segment metric's confidence sequence scaled by
// the share, at the ranking's level divided by the number of values (Bonferroni), so every
// row holds at once and at every look (PSI and KS have no such interval: their rows are
// ranked by value and never marked as differing). Differs: the interval lies wholly on the worse side of
// the noise baseline's contribution interval in the same segment (of zero without a
// baseline). Stats are every statistic of the segment.
type SegmentRow struct {
	Value        string    `json:"value"`
	Requests     uint64    `json:"requests"`
	Share        float64   `json:"share"`
	Metric       *Estimate `json:"metric,omitempty"`
	Contribution *Estimate `json:"contribution,omitempty"`
	Floor        *Estimate `json:"floor,omitempty"` // the noise baseline's contribution
	Differs      bool      `json:"differs"`
	Stats        Stats     `json:"stats"`
}
