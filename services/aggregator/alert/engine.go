package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/webhook"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/logchange"
	"golang.org/x/sync/errgroup"
)

// Source is where the engine reads statistics from (the window store implements it).
type Source interface {
	// ActiveExperiments returns the experiments with windows starting at or after since.
	ActiveExperiments(ctx context.Context, since time.Time) ([]string, error)
	// Range returns each shadow's windows of experiment merged over [from, to).
	Range(ctx context.Context, experiment string, from, to time.Time) (map[string]*window.Window, error)
	// FirstWindow returns the start of experiment's earliest stored window; ok is false when it
	// has none.
	FirstWindow(ctx context.Context, experiment string) (start time.Time, ok bool, err error)
}

// Engine evaluates rules while it holds the leader lock. Create it with NewEngine.
type Engine struct {
	cfg    Config
	db     *pgxpool.Pool
	src    Source
	rules  func() *Rules
	logger *slog.Logger
	now    func() time.Time

	leader      prometheus.Gauge
	evaluations prometheus.Counter
	transitions *prometheus.CounterVec
	warn        logchange.Warner
}

// NewEngine wires an engine. rules is called at every evaluation (so reloads take effect).
func NewEngine(cfg Config, db *pgxpool.Pool, src Source, rules func() *Rules, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Engine {
	f := promauto.With(reg)
	return &Engine{
		cfg: cfg, db: db, src: src, rules: rules, logger: logger, now: now,
		leader:      f.NewGauge(prometheus.GaugeOpts{Name: "understudy_aggregator_alert_leader", Help: "1 while this replica holds the alert lock and evaluates rules."}),
		evaluations: f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_alert_evaluations_total", Help: "Alert evaluation steps completed."}),
		transitions: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_aggregator_alert_transitions_total", Help: "Alert state transitions by new state."}, []string{"state"}),
	}
}

// lockKey is the advisory lock that elects the evaluating replica.
const lockKey = int64(0x756e64657273) // "unders"

// Run competes for the leader lock until ctx ends; while leading, it evaluates every
// Interval and runs each of also (for example the webhook sender), which are cancelled when
// leadership is lost. Leadership is lost when the lock's connection fails.
func (e *Engine) Run(ctx context.Context, also ...func(context.Context) error) error {
	t := time.NewTicker(min(e.cfg.Interval, 5*time.Second))
	defer t.Stop()
	for {
		if err := e.lead(ctx, t.C, also); err != nil && ctx.Err() == nil {
			e.logErr("alert leadership", err)
		}
		e.leader.Set(0)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (e *Engine) logErr(what string, err error) { e.warn.Warn(e.logger, what, err) }

func (e *Engine) lead(ctx context.Context, tick <-chan time.Time, also []func(context.Context) error) error {
	conn, err := e.db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&got); err != nil {
		return err
	}
	if !got {
		return nil
	}
	defer func() {
		// Unlock on a healthy connection; a broken one has lost the lock already.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, lockKey)
	}()
	e.leader.Set(1)
	e.logger.Info("alert evaluation leader")
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range also {
		g.Go(func() error { return f(gctx) })
	}
	g.Go(func() error {
		defer func() { e.logger.Info("alert evaluation leadership ended") }()
		for {
			if err := conn.Ping(gctx); err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("leader lock connection: %w", err)
			}
			end := e.now().Add(-e.cfg.Delay).Truncate(e.cfg.Interval)
			if err := e.Evaluate(gctx, end); err != nil && gctx.Err() == nil {
				e.logErr("alert evaluation", err)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-tick:
			}
		}
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// status is a stored alert state.
type status struct {
	State       State
	Streak      int
	EvaluatedTo time.Time
}

type alertKey struct{ shadow, rule string }

// Evaluate runs one evaluation step over the range ending at end for every experiment with
// recent windows or a non-inactive alert. A step already evaluated for an alert (its stored
// evaluated_to is not before end) is skipped, so repeating a step changes nothing. Each
// experiment's new states, history and notifications commit in one transaction.
func (e *Engine) Evaluate(ctx context.Context, end time.Time) error {
	from, since := end.Add(-e.cfg.Range), end.Add(-e.cfg.Range)
	if e.cfg.Range == 0 {
		from, since = time.Unix(0, 0).UTC(), end.Add(-time.Hour)
	}
	active, err := e.src.ActiveExperiments(ctx, since)
	if err != nil {
		return err
	}
	exps := map[string]bool{}
	for _, x := range active {
		exps[x] = true
	}
	rows, err := e.db.Query(ctx, `SELECT DISTINCT experiment FROM alert_states WHERE state IN ('pending', 'firing')`)
	if err != nil {
		return fmt.Errorf("load alert experiments: %w", err)
	}
	var x string
	if _, err := pgx.ForEachRow(rows, []any{&x}, func() error { exps[x] = true; return nil }); err != nil {
		return fmt.Errorf("load alert experiments: %w", err)
	}
	names := make([]string, 0, len(exps))
	for n := range exps {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, exp := range names {
		if err := e.evaluateExperiment(ctx, exp, Range{From: from, To: end}); err != nil {
			errs = append(errs, fmt.Errorf("experiment %s: %w", exp, err))
		}
	}
	e.evaluations.Inc()
	return errors.Join(errs...)
}

func (e *Engine) evaluateExperiment(ctx context.Context, exp string, r Range) error {
	ws, err := e.src.Range(ctx, exp, r.From, r.To)
	if err != nil {
		return err
	}
	reports := stats.Report(ws, e.cfg.Options)
	rs := e.rules()
	rules := rs.For(exp)
	first, ok, err := e.src.FirstWindow(ctx, exp)
	if err != nil {
		return err
	}
	j := Judgement{Decision: rs.Decision(exp)}
	if ok {
		j.Observed = r.To.Sub(later(first, r.From))
	}
	return pgx.BeginFunc(ctx, e.db, func(tx pgx.Tx) error {
		prev, err := loadStates(ctx, tx, exp)
		if err != nil {
			return err
		}
		seen := map[alertKey]bool{}
		for _, rep := range reports {
			if rep.Role == schemas.RoleNoiseBaseline || rep.Shadow == "" {
				continue
			}
			// An alert fires on a FAIL (an interval beyond the threshold and the noise floor;
			// threshold-only rules on their estimate), held for the rule's for: evaluations.
			v := Judge(rules, rep, j)
			for i, rule := range rules {
				k := alertKey{rep.Shadow, rule.Name}
				seen[k] = true
				ev := evidenceOf(v.Rules[i], metricValue(&rep.Stats, rule.Metric), metricValue(rep.NoiseFloor, rule.Metric))
				if err := e.step(ctx, tx, exp, rep.Shadow, rule, prev[k], ev, r); err != nil {
					return err
				}
			}
		}
		// Alerts whose shadow or rule is gone from the range: their condition no longer holds.
		for k, st := range prev {
			if seen[k] || (st.State != StatePending && st.State != StateFiring) {
				continue
			}
			rule := Rule{Name: k.rule, For: 1}
			for _, ru := range rules {
				if ru.Name == k.rule {
					rule = ru
				}
			}
			if err := e.step(ctx, tx, exp, k.shadow, rule, st, evidence{Status: StatusContinue, Reason: "shadow or rule no longer in range"}, r); err != nil {
				return err
			}
		}
		return nil
	})
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// metricValue is metric m of st, nil when st is nil or the metric cannot be computed.
func metricValue(st *stats.Stats, m stats.Metric) *float64 {
	if st == nil {
		return nil
	}
	v, _, ok := st.Value(m)
	if !ok {
		return nil
	}
	return &v
}

func loadStates(ctx context.Context, tx pgx.Tx, exp string) (map[alertKey]status, error) {
	rows, err := tx.Query(ctx, `SELECT shadow, rule, state, streak, evaluated_to FROM alert_states WHERE experiment = $1 FOR UPDATE`, exp)
	if err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	out := map[alertKey]status{}
	var (
		k  alertKey
		st status
	)
	if _, err := pgx.ForEachRow(rows, []any{&k.shadow, &k.rule, &st.State, &st.Streak, &st.EvaluatedTo}, func() error {
		out[k] = st
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	return out, nil
}

// evidence is what one evaluation of a rule saw: the statistic, the copy's, the rule's
// interval (nil bounds when open on that side or not computable), its status and why. An alert
// condition holds exactly when the status is FAIL.
type evidence struct {
	Value, Floor *float64
	Low, High    *float64
	N            uint64
	Status       string
	Reason       string
}

func evidenceOf(res RuleResult, value, floor *float64) evidence {
	ev := evidence{Value: value, Floor: floor, Status: res.Status, Reason: res.Reason}
	if res.Estimate != nil {
		ev.N = res.Estimate.N
		if res.Estimate.Method != stats.MethodThreshold { // a threshold-only estimate has no interval
			ev.Low, ev.High = apiv1.Finite(res.Estimate.Low), apiv1.Finite(res.Estimate.High)
		}
	}
	return ev
}

// step applies one evaluation to one alert: new state, history row and notification.
func (e *Engine) step(ctx context.Context, tx pgx.Tx, exp, shadow string, rule Rule, prev status, ev evidence, r Range) error {
	if prev.State == "" {
		prev.State = StateInactive
	}
	if !prev.EvaluatedTo.IsZero() && !prev.EvaluatedTo.Before(r.To) {
		return nil
	}
	next, streak := Next(prev.State, prev.Streak, rule, ev.Status == StatusFail)
	now := e.now()
	if _, err := tx.Exec(ctx, `
		INSERT INTO alert_states (experiment, shadow, rule, state, streak, value, noise_floor, samples, since, evaluated_to,
			interval_low, interval_high, status, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (experiment, shadow, rule) DO UPDATE SET
			state = excluded.state, streak = excluded.streak, value = excluded.value, noise_floor = excluded.noise_floor,
			samples = excluded.samples, evaluated_to = excluded.evaluated_to,
			interval_low = excluded.interval_low, interval_high = excluded.interval_high,
			status = excluded.status, reason = excluded.reason,
			since = CASE WHEN alert_states.state = excluded.state THEN alert_states.since ELSE excluded.since END`,
		exp, shadow, rule.Name, string(next), streak, ev.Value, ev.Floor, int64(ev.N), now, r.To,
		ev.Low, ev.High, ev.Status, ev.Reason); err != nil {
		return fmt.Errorf("store alert state: %w", err)
	}
	if next == prev.State {
		return nil
	}
	e.transitions.WithLabelValues(string(next)).Inc()
	var id int64
	if err := tx.QueryRow(ctx, `
		INSERT INTO alert_history (experiment, shadow, rule, severity, from_state, to_state, value, noise_floor, threshold, samples, range_from, range_to, at,
			interval_low, interval_high, status, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id`,
		exp, shadow, rule.Name, rule.Severity, string(prev.State), string(next), ev.Value, ev.Floor, rule.Threshold, int64(ev.N), r.From, r.To, now,
		ev.Low, ev.High, ev.Status, ev.Reason).Scan(&id); err != nil {
		return fmt.Errorf("record alert transition: %w", err)
	}
	if !Notifies(prev.State, next) {
		return nil
	}
	msgID := MessageID(exp, shadow, rule.Name, id, next)
	p := Payload{Type: "alert." + string(next), Timestamp: now.UTC(), Data: Data{
		Version: apiv1.PayloadVersion, ID: msgID, Experiment: exp, Shadow: shadow, Rule: apiv1.Rule(rule), State: next, PreviousState: prev.State,
		Value: ev.Value, NoiseFloor: ev.Floor, Interval: Interval{Low: ev.Low, High: ev.High}, Status: ev.Status, Reason: ev.Reason,
		Samples: ev.N, Window: Range{From: r.From.UTC(), To: r.To.UTC()}, Links: e.links(exp, r),
	}}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode alert payload: %w", err)
	}
	return webhook.Enqueue(ctx, tx, msgID, b, now)
}

func (e *Engine) links(exp string, r Range) Links {
	base := e.cfg.ExternalURL + "/api/v1/experiments/" + url.PathEscape(exp)
	q := url.Values{"from": {r.From.UTC().Format(time.RFC3339)}, "to": {r.To.UTC().Format(time.RFC3339)}}
	return Links{
		Stats:   base + "/stats?" + q.Encode(),
		Alerts:  e.cfg.ExternalURL + "/api/v1/alerts?" + url.Values{"experiment": {exp}}.Encode(),
		History: e.cfg.ExternalURL + "/api/v1/alerts/history?" + url.Values{"experiment": {exp}}.Encode(),
	}
}

// SlackBody turns a queued payload into a Slack-compatible incoming-webhook body.
func SlackBody(payload []byte) ([]byte, error) {
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("decode alert payload: %w", err)
	}
	return json.Marshal(map[string]string{"text": SlackText(p.Data)})
}

// Querier is the part of pgx that the read functions need.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// States returns the stored alert states of experiment (every experiment when empty), and
// only those in state when it is not empty.
func States(ctx context.Context, db Querier, experiment string, state State) ([]Current, error) {
	rows, err := db.Query(ctx, `
		SELECT experiment, shadow, rule, state, value, noise_floor, interval_low, interval_high, status, reason, samples, since, evaluated_to FROM alert_states
		WHERE ($1 = '' OR experiment = $1) AND ($2 = '' OR state = $2) ORDER BY experiment, shadow, rule`, experiment, string(state))
	if err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Current, error) {
		var c Current
		err := r.Scan(&c.Experiment, &c.Shadow, &c.Rule, &c.State, &c.Value, &c.NoiseFloor, &c.Interval.Low, &c.Interval.High, &c.Status, &c.Reason, &c.Samples, &c.Since, &c.EvaluatedTo)
		c.Since, c.EvaluatedTo = c.Since.UTC(), c.EvaluatedTo.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("load alert states: %w", err)
	}
	return out, nil
}

// History returns the transitions of experiment (every experiment when empty) at or after
// since, oldest first, at most limit.
func History(ctx context.Context, db Querier, experiment string, since time.Time, limit int) ([]Transition, error) {
	rows, err := db.Query(ctx, `
		SELECT id, experiment, shadow, rule, severity, from_state, to_state, value, noise_floor, interval_low, interval_high, status, reason,
			threshold, samples, range_from, range_to, at
		FROM alert_history WHERE ($1 = '' OR experiment = $1) AND at >= $2 ORDER BY id LIMIT $3`, experiment, since, limit)
	if err != nil {
		return nil, fmt.Errorf("load alert history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Transition, error) {
		var t Transition
		err := r.Scan(&t.ID, &t.Experiment, &t.Shadow, &t.Rule, &t.Severity, &t.From, &t.To, &t.Value, &t.NoiseFloor, &t.Interval.Low, &t.Interval.High, &t.Status, &t.Reason, &t.Threshold, &t.Samples, &t.Window.From, &t.Window.To, &t.At)
		t.Window.From, t.Window.To, t.At = t.Window.From.UTC(), t.Window.To.UTC(), t.At.UTC()
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("load alert history: %w", err)
	}
	return out, nil
}
