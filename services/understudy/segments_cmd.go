package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/understudy/report"
)

// segmentQuery is what `understudy report --by segment` asks the API for.
type segmentQuery struct {
	experiment, key, metric string
	top                     int
	from, to                time.Time
}

// reportSegments prints each shadow's values of one segment key ranked by their contribution
// to the metric (GET /api/v1/experiments/{e}/segments). It returns the exit code.
func reportSegments(ctx context.Context, a apiFlags, q segmentQuery, form string, stdout, stderr io.Writer) int {
	v := url.Values{"from": {q.from.UTC().Format(time.RFC3339)}, "to": {q.to.UTC().Format(time.RFC3339)}, "metric": {q.metric}, "top": {fmt.Sprint(q.top)}}
	if q.key != "" {
		v.Set("key", q.key)
	}
	var out apiv1.SegmentsResponse
	if err := a.client().Get(ctx, "/api/v1/experiments/"+url.PathEscape(q.experiment)+"/segments", v, &out); err != nil {
		fmt.Fprintln(stderr, "understudy report:", err)
		return report.ExitNoData
	}
	if form == "json" {
		return printJSON(stdout, stderr, "report", out)
	}
	if out.Key == "" {
		fmt.Fprintf(stderr, "understudy report: experiment %s has no segment windows in the range (declare segments.keys in the experiments file)\n", q.experiment)
		return report.ExitNoData
	}
	writeRanking(stdout, out)
	return 0
}

// writeRanking prints a segment ranking as a table per shadow.
func writeRanking(w io.Writer, r apiv1.SegmentsResponse) {
	fmt.Fprintf(w, "Experiment %s by segment %s (keys: %v), %s to %s\n", r.Experiment, r.Key, r.Keys, r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	fmt.Fprintf(w, "Ranked by contribution to %s: the segment's share of the samples × its %s, with an interval valid at every look (all rows at once); a row differs when its interval lies beyond the noise floor's.\n", r.Metric, r.Metric)
	for _, s := range r.Shadows {
		fmt.Fprintf(w, "\n%s (%s)", s.Shadow, s.Role)
		if s.Overall != nil {
			fmt.Fprintf(w, ": overall %s %s", r.Metric, estimate(s.Overall))
		}
		if s.Baseline != "" {
			fmt.Fprintf(w, "; noise floor: %s", s.Baseline)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "RANK\tVALUE\tREQUESTS\tSHARE\tMETRIC\tCONTRIBUTION\tFLOOR\tDIFFERS")
		for i, row := range s.Rows {
			differs := ""
			if row.Differs {
				differs = "yes"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f%%\t%s\t%s\t%s\t%s\n", i+1, row.Value, row.Requests, 100*row.Share, estimate(row.Metric), estimate(row.Contribution), estimate(row.Floor), differs)
		}
		_ = tw.Flush()
	}
}

// estimate prints a value and its interval, "-" when there is none.
func estimate(e *apiv1.Estimate) string {
	if e == nil {
		return "-"
	}
	bound := func(x float64) string {
		if math.IsInf(x, 0) {
			return "∞"
		}
		return fmt.Sprintf("%.4g", x)
	}
	if e.Low == e.Value && e.High == e.Value {
		return fmt.Sprintf("%.4g", e.Value)
	}
	return fmt.Sprintf("%.4g [%s, %s]", e.Value, bound(e.Low), bound(e.High))
}
