package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/invoker/internal/shadow"
)

// maxResultBytes bounds an encoded ShadowResult, below Kafka's default 1 MiB record limit.
const maxResultBytes = 512 << 10

// shadowLane calls one shadow of one experiment (or of every experiment not configured by
// name, for AnyExperiment) for the events of its own consumer group.
type shadowLane struct {
	*lane
	key    laneKey
	caller atomic.Pointer[shadow.Caller]
	set    func() *callerSet
	decode func(context.Context, *kgo.Record, time.Time) (schemas.InferenceEvent, string, error)
	encode func([]byte, schemas.ShadowResult) ([]byte, error)
	pacer  pacer

	cancel context.CancelFunc
	done   chan struct{}
}

func (inv *Invoker) newShadowLane(k laneKey, c *shadow.Caller) (*shadowLane, error) {
	sl := &shadowLane{
		key: k, set: inv.callers.Load, decode: inv.decode, encode: inv.codecs.Shadow.Encode,
		pacer: pacer{delay: inv.cfg.PacingDelay}, done: make(chan struct{}),
	}
	sl.caller.Store(c)
	name := k.experiment + "/" + k.shadow
	l, err := inv.newLane(name, LaneGroup(inv.cfg.Group, k.experiment, k.shadow), "understudy-invoker-"+inv.cfg.InstanceID+"/"+name, sl.handle)
	if err != nil {
		return nil, err
	}
	sl.lane = l
	return sl, nil
}

// start runs the lane until ctx ends or stop is called; a lane error is sent to failed.
func (sl *shadowLane) start(ctx context.Context, failed chan<- error) {
	ctx, sl.cancel = context.WithCancel(ctx)
	go func() {
		defer close(sl.done)
		defer sl.close()
		if err := sl.run(ctx); err != nil {
			select {
			case failed <- err:
			default:
			}
		}
	}()
}

// stop ends the lane after its batch in progress, waiting at most timeout.
func (sl *shadowLane) stop(timeout time.Duration) error {
	sl.cancel()
	select {
	case <-sl.done:
		sl.caller.Load().Close()
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("still finishing its batch after %s", timeout)
	}
}

// answered is when the champion answered ev's request: the tap publishes the event then, so
// it is the earliest moment a call can be paced from, whatever the champion's latency.
func answered(ev schemas.InferenceEvent) time.Time { return ev.EventTime.Add(ev.Latency) }

// handle calls the shadow for the batch's events of its experiment, each at its paced time.
func (sl *shadowLane) handle(ctx context.Context, fs kgo.Fetches) ([]*kgo.Record, error) {
	now := time.Now()
	set, c := sl.set(), sl.caller.Load()
	var evs []schemas.InferenceEvent
	fs.EachRecord(func(r *kgo.Record) {
		ev, _, err := sl.decode(ctx, r, now)
		if err != nil {
			return // the intake lane dead-letters it
		}
		if ev.Experiment == sl.key.experiment || (sl.key.experiment == AnyExperiment && !set.explicit[ev.Experiment]) {
			evs = append(evs, ev)
		}
	})
	if len(evs) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(evs, func(a, b schemas.InferenceEvent) int { return answered(a).Compare(answered(b)) })
	var (
		mu  sync.Mutex
		out = make([]*kgo.Record, 0, len(evs))
		wg  sync.WaitGroup
		err error
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for _, ev := range evs {
		wait, pacing := sl.pacer.plan(time.Now(), answered(ev))
		if wait > 0 && ctx.Err() == nil {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done(): // shutting down: the rest leave at once so the batch commits
			}
		}
		sl.m.dispatched.WithLabelValues(c.Name(), pacing).Inc()
		wg.Go(func() {
			rec, eerr := sl.result(ctx, c, ev, pacing)
			mu.Lock()
			defer mu.Unlock()
			if eerr != nil {
				err = errors.Join(err, eerr)
				return
			}
			out = append(out, rec)
		})
	}
	wg.Wait()
	return out, err
}

// result calls the shadow and encodes its result, which says how the call was dispatched.
func (sl *shadowLane) result(ctx context.Context, c *shadow.Caller, ev schemas.InferenceEvent, pacing string) (*kgo.Record, error) {
	res := c.Call(context.WithoutCancel(ctx), ev, "")
	res.Dispatch = pacing
	value, err := sl.encode(nil, res)
	if err == nil && len(value) > maxResultBytes {
		// A prediction too large to forward (a huge vector): the result says so instead of
		// failing the batch for good at the broker.
		res.Response.Body, res.Response.Prediction = nil, schemas.Prediction{}
		res.Error = &schemas.Error{Kind: shadow.KindBadResponse, Message: fmt.Sprintf("result of %d bytes exceeds the %d-byte record limit", len(value), maxResultBytes)}
		value, err = sl.encode(nil, res)
	}
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return &kgo.Record{Topic: schemas.TopicShadow, Key: []byte(ev.RequestID), Value: value}, nil
}
