// Package replay sends recorded inference events of a time window to one shadow, tagging every
// result with a run id, so a candidate can be evaluated on last week's traffic and compared
// with the live run and with other replays.
//
// Events are found by time: Kafka's offsets-for-times give each partition's first offset at or
// after From and To; events whose own event time falls outside [From, To) or that belong to
// another experiment are passed over. Progress (the next offset of every partition) is saved
// to a state file after each batch of results is acknowledged, so an interrupted replay
// resumes where it stopped: every event in the window gets exactly one result per run, unless
// the process dies between a batch's acknowledgement and the state write (then that batch
// repeats).
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/invoker/internal/shadow"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"golang.org/x/time/rate"
)

// Options describe one replay run.
type Options struct {
	Kafka          kafka.Config
	Experiment     string
	From, To       time.Time
	Shadow         experiment.Shadow // with defaults filled
	RunID          string
	Rate           float64 // events per second; 0: as fast as the shadow's budget allows
	PreserveTiming bool    // space calls as the events were spaced when recorded
	StateFile      string  // progress; empty: not resumable
	Batch          int     // results per acknowledged batch (default 200)
	// Progress, when set, is called after every batch with events read and the total to read.
	Progress func(read, total int64)
}

// Summary says what a run did.
type Summary struct {
	Read     int64 // records read in the window's offsets
	Replayed int64 // events sent to the shadow (experiment and event time matched)
	Outcomes map[string]int64
}

type state struct {
	RunID string           `json:"run_id"`
	Next  map[int32]int64  `json:"next"`
	Ends  map[int32]int64  `json:"ends"`
	Start map[int32]int64  `json:"start"`
	Done  map[string]int64 `json:"outcomes"`
}

// Run replays until the window is done or ctx ends (then it returns ctx's error; run it again
// with the same state file to resume).
func Run(ctx context.Context, o Options, obs shadow.Observer) (Summary, error) {
	if o.Batch <= 0 {
		o.Batch = 200
	}
	if o.RunID == "" || !o.From.Before(o.To) {
		return Summary{}, errors.New("replay needs a run id and from < to")
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return Summary{}, err
	}
	caller, err := shadow.New(o.Shadow, obs)
	if err != nil {
		return Summary{}, err
	}
	defer caller.Close()
	admin, err := kgo.NewClient(o.Kafka.Opts()...)
	if err != nil {
		return Summary{}, fmt.Errorf("kafka client: %w", err)
	}
	defer admin.Close()
	st, err := loadState(o.StateFile, o.RunID)
	if err != nil {
		return Summary{}, err
	}
	if st.Ends == nil {
		if st, err = window(ctx, kadm.NewClient(admin), o); err != nil {
			return Summary{}, err
		}
	}
	var total int64
	offsets := map[int32]kgo.Offset{}
	for p, end := range st.Ends {
		total += end - st.Start[p]
		if st.Next[p] < end {
			offsets[p] = kgo.NewOffset().At(st.Next[p])
		}
	}
	sum := Summary{Outcomes: st.Done}
	for p := range st.Next {
		sum.Read += st.Next[p] - st.Start[p]
	}
	if len(offsets) == 0 {
		return sum, nil
	}
	cl, err := kgo.NewClient(append(o.Kafka.Opts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicInference: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic(schemas.TopicShadow),
	)...)
	if err != nil {
		return sum, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	var limiter *rate.Limiter
	if o.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	var firstEvent, replayStart time.Time
	pending := map[int32]bool{}
	for p := range offsets {
		pending[p] = true
	}
	for len(pending) > 0 {
		fs := cl.PollRecords(ctx, o.Batch)
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		next := map[int32]int64{}
		var recs []*kgo.Record
		for _, r := range fs.Records() {
			if !pending[r.Partition] || r.Offset >= st.Ends[r.Partition] {
				continue
			}
			next[r.Partition] = r.Offset + 1
			if r.Offset+1 >= st.Ends[r.Partition] {
				delete(pending, r.Partition)
			}
			sum.Read++
			ev, err := codecs.Inference.Decode(ctx, r.Value)
			if err != nil || ev.Experiment != o.Experiment || ev.EventTime.Before(o.From) || !ev.EventTime.Before(o.To) {
				continue
			}
			if o.PreserveTiming {
				if firstEvent.IsZero() {
					firstEvent, replayStart = ev.EventTime, time.Now()
				}
				if d := time.Until(replayStart.Add(ev.EventTime.Sub(firstEvent))); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return sum, ctx.Err()
					}
				}
			} else if limiter != nil {
				if err := limiter.Wait(ctx); err != nil {
					return sum, err
				}
			}
			res := caller.Call(ctx, ev, o.RunID)
			if ctx.Err() != nil {
				return sum, ctx.Err() // this batch is not acknowledged: it repeats on resume
			}
			v, err := codecs.Shadow.Encode(nil, res)
			if err != nil {
				return sum, fmt.Errorf("encode result: %w", err)
			}
			recs = append(recs, &kgo.Record{Key: []byte(ev.RequestID), Value: v})
			kind := "ok"
			if res.Error != nil {
				kind = res.Error.Kind
			}
			st.Done[kind]++
			sum.Replayed++
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return sum, fmt.Errorf("produce results: %w", err)
		}
		for p, n := range next {
			st.Next[p] = n
		}
		if err := saveState(o.StateFile, st); err != nil {
			return sum, err
		}
		if o.Progress != nil {
			o.Progress(sum.Read, total)
		}
	}
	return sum, nil
}

// window finds each partition's offsets for From and To.
func window(ctx context.Context, adm *kadm.Client, o Options) (state, error) {
	from, err := adm.ListOffsetsAfterMilli(ctx, o.From.UnixMilli(), schemas.TopicInference)
	if err != nil {
		return state{}, fmt.Errorf("offsets for %s: %w", o.From, err)
	}
	to, err := adm.ListOffsetsAfterMilli(ctx, o.To.UnixMilli(), schemas.TopicInference)
	if err != nil {
		return state{}, fmt.Errorf("offsets for %s: %w", o.To, err)
	}
	st := state{RunID: o.RunID, Next: map[int32]int64{}, Ends: map[int32]int64{}, Start: map[int32]int64{}, Done: map[string]int64{}}
	from.Each(func(l kadm.ListedOffset) {
		if l.Err == nil && l.Partition >= 0 {
			st.Start[l.Partition], st.Next[l.Partition] = l.Offset, l.Offset
		}
	})
	to.Each(func(l kadm.ListedOffset) {
		if l.Err == nil && l.Partition >= 0 {
			st.Ends[l.Partition] = l.Offset
		}
	})
	if len(st.Start) == 0 {
		return state{}, fmt.Errorf("topic %s not found", schemas.TopicInference)
	}
	return st, nil
}

func loadState(path, runID string) (state, error) {
	if path == "" {
		return state{RunID: runID, Done: map[string]int64{}}, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return state{RunID: runID, Done: map[string]int64{}}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("read replay state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, fmt.Errorf("replay state %s: %w", path, err)
	}
	if st.RunID != runID {
		return state{}, fmt.Errorf("replay state %s belongs to run %q, not %q", path, st.RunID, runID)
	}
	if st.Done == nil {
		st.Done = map[string]int64{}
	}
	return st, nil
}

func saveState(path string, st state) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write replay state: %w", err)
	}
	return os.Rename(tmp, path)
}
