package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// writeExamples inserts the batch's examples (a request already kept for its window and kind
// is left as it is) and prunes every touched window and kind back to its k best, in tx.
func writeExamples(ctx context.Context, tx pgx.Tx, exs []window.Example, k int) error {
	if len(exs) == 0 {
		return nil
	}
	var (
		exps, shadows, kinds, ids []string
		starts                    []time.Time
		scores                    []float64
		docs                      [][]byte
	)
	for _, e := range exs {
		doc, err := json.Marshal(APIExample(e))
		if err != nil {
			return fmt.Errorf("encode example %s: %w", e.Comparison.RequestID, err)
		}
		exps, shadows, kinds, ids = append(exps, e.Key.Experiment), append(shadows, e.Key.Shadow), append(kinds, e.Kind), append(ids, e.Comparison.RequestID)
		starts, scores, docs = append(starts, e.Key.Start.UTC()), append(scores, e.Score), append(docs, doc)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO aggregator_examples (experiment, shadow, window_start, kind, request_id, score, example)
		SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::float8[], $7::jsonb[]) ORDER BY 1, 2, 3, 4, 5
		ON CONFLICT (experiment, shadow, window_start, kind, request_id) DO NOTHING`,
		exps, shadows, starts, kinds, ids, scores, docs); err != nil {
		return fmt.Errorf("store examples: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		DELETE FROM aggregator_examples e
		USING (
			SELECT experiment, shadow, window_start, kind, request_id,
				row_number() OVER (PARTITION BY experiment, shadow, window_start, kind ORDER BY score DESC, request_id) AS rank
			FROM aggregator_examples
			WHERE (experiment, shadow, window_start, kind) IN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]))
		) r
		WHERE r.rank > $5 AND (e.experiment, e.shadow, e.window_start, e.kind, e.request_id) = (r.experiment, r.shadow, r.window_start, r.kind, r.request_id)`,
		exps, shadows, starts, kinds, k); err != nil {
		return fmt.Errorf("prune examples: %w", err)
	}
	return nil
}

// ExampleFilter selects examples: an experiment, optionally one shadow and one kind, windows
// starting in [From, To), at most Limit (≤ 0: 100).
type ExampleFilter struct {
	Experiment, Shadow, Kind string
	From, To                 time.Time
	Limit                    int
}

// Examples returns the examples the filter selects, by window, kind and rank.
func Examples(ctx context.Context, db Querier, f ExampleFilter) ([]apiv1.Example, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := db.Query(ctx, `
		SELECT example FROM aggregator_examples
		WHERE experiment = $1 AND ($2 = '' OR shadow = $2) AND ($3 = '' OR kind = $3)
			AND window_start >= $4 AND window_start < $5
		ORDER BY window_start, shadow, kind, score DESC, request_id
		LIMIT $6`,
		f.Experiment, f.Shadow, f.Kind, f.From.UTC(), f.To.UTC(), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("read examples: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Example{}
	for rows.Next() {
		var (
			doc []byte
			e   apiv1.Example
		)
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("read examples: %w", err)
		}
		if err := json.Unmarshal(doc, &e); err != nil {
			return nil, fmt.Errorf("decode stored example: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read examples: %w", err)
	}
	return out, nil
}

// APIExample is e as the read API serves it.
func APIExample(e window.Example) apiv1.Example {
	c := e.Comparison
	out := apiv1.Example{
		Shadow: e.Key.Shadow, Window: e.Key.Start.UTC(), Kind: e.Kind, Score: e.Score,
		RequestID: c.RequestID, EventTime: c.EventTime.UTC(), Status: c.Status,
		Request: apiv1.NewBody(c.RequestBody, c.RequestTruncated),
	}
	if c.Champion != nil {
		out.Champion = answer(*c.Champion)
	}
	if len(c.Shadows) > 0 {
		out.Answer = answer(c.Shadows[0])
	}
	if c.Label != nil {
		out.Label = &apiv1.Label{Value: predictionValue(c.Label.Value), EventTime: c.Label.EventTime.UTC(), Source: c.Label.Source}
	}
	return out
}

func answer(o schemas.Outcome) apiv1.Answer {
	a := apiv1.Answer{
		Model: o.Name, Version: o.Version, Status: o.Status, Value: predictionValue(o.Prediction),
		LatencyMS: float64(o.Latency.Microseconds()) / 1e3, Body: apiv1.NewBody(o.Body, o.BodyTruncated),
	}
	if o.Error != nil {
		a.Error = &apiv1.AnswerError{Kind: o.Error.Kind, Message: o.Error.Message}
	}
	return a
}

// predictionValue is p as JSON: a number, a string, an array of numbers or null. Numbers JSON
// cannot carry (NaN, ±Inf) are null.
func predictionValue(p schemas.Prediction) any {
	switch p.Kind {
	case schemas.PredictionNumber:
		if f := apiv1.Finite(p.Number); f != nil {
			return *f
		}
	case schemas.PredictionLabel:
		return p.Label
	case schemas.PredictionVector:
		out := make([]any, len(p.Vector))
		for i, x := range p.Vector {
			if f := apiv1.Finite(x); f != nil {
				out[i] = *f
			}
		}
		return out
	}
	return nil
}
