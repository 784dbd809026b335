package main

import (
	"math"
	"math/rand/v2"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// model is what a simulated shadow answers, relative to the champion.
type model struct {
	latencyScale float64 // its latency distribution is the reference's times this
	accuracyDiff float64 // its accuracy minus the champion's
	topDecileAdd float64 // extra probability mass moved into the champion's top score decile
	failOnly     float64 // probability that only this model fails a request
}

// world holds the distributions every side draws from. Latency and score distributions are
// discretized into bins of fixed values; a window's sketches get each bin's count as one
// weighted value, so a 10-minute look costs a few hundred sketch updates, not 6,000.
type world struct {
	latency    []float64 // bin values, ms
	latencyP   []float64 // bin probabilities
	scores     []float64
	scoresP    []float64
	latMean    float64 // mean of the latency bins, ms
	latVar     float64
	discordant float64 // probability that the shadow and the champion differ on a labeled request
	accuracy   float64 // champion accuracy
	bothFail   float64 // requests every model rejects (malformed)
	champFail  float64 // requests only the champion fails
}

func newWorld() *world {
	w := &world{discordant: 0.04, accuracy: 0.8, bothFail: 0.05, champFail: 0.003}
	// Lognormal latency, median 20 ms, σ = 0.5: 100 equal-probability bins for the body below
	// the 95th percentile and 100 for the tail, so p99 is resolved to a 0.05 % rank.
	add := func(lo, hi float64, k int) {
		for i := range k {
			u := lo + (hi-lo)*(float64(i)+0.5)/float64(k)
			w.latency = append(w.latency, 20*math.Exp(0.5*normQuantile(u)))
			w.latencyP = append(w.latencyP, (hi-lo)/float64(k))
		}
	}
	add(0, 0.95, 100)
	add(0.95, 1, 100)
	for i, v := range w.latency {
		w.latMean += v * w.latencyP[i]
	}
	for i, v := range w.latency {
		w.latVar += (v - w.latMean) * (v - w.latMean) * w.latencyP[i]
	}
	for i := range 100 {
		w.scores = append(w.scores, (float64(i)+0.5)/100)
		w.scoresP = append(w.scoresP, 0.01)
	}
	return w
}

// look returns the window of n requests between the champion and a shadow answering as m.
func (w *world) look(r *rand.Rand, n int, m model, role string) *window.Window {
	win := window.New()
	win.Role = role
	win.Total = uint64(n)
	win.Statuses[schemas.StatusComplete] = uint64(n)
	// Latency in µs, from one distribution for every side (the vantage-point bias of the
	// champion's tap timing is a separate matter: the rules compare with the copy).
	addBins(r, win.Champion.Latency, n, w.latency, w.latencyP, 1000)
	addBins(r, win.Shadow.Latency, n, w.latency, w.latencyP, m.latencyScale*1000)
	// Per-request latency differences: sums of n independent differences.
	win.LatencyVsChampion = moments(r, n, w.latMean*(m.latencyScale-1), w.latVar*(m.latencyScale*m.latencyScale+1))
	// Scores: the champion's; the shadow's with mass moved into the top decile.
	addBins(r, win.Champion.Predictions, n, w.scores, w.scoresP, 1)
	sp := w.scoresP
	if m.topDecileAdd > 0 {
		sp = make([]float64, len(w.scoresP))
		for i, p := range w.scoresP {
			sp[i] = p * (1 - m.topDecileAdd)
			if i >= 90 {
				sp[i] += m.topDecileAdd / 10
			}
		}
	}
	addBins(r, win.Shadow.Predictions, n, w.scores, sp, 1)
	win.Compared = uint64(n)
	win.Agree = uint64(n - binomial(r, n, w.discordant))
	// Failures on the same requests.
	c := multinomial(r, n, []float64{w.bothFail, w.champFail, m.failOnly})
	win.Errors = window.PairedErrors{N: uint64(n), Both: uint64(c[0]), ChampionOnly: uint64(c[1]), ShadowOnly: uint64(c[2])}
	win.Champion.Errors[schemas.FailureHTTP4xx] = uint64(c[0] + c[1])
	win.Shadow.Errors[schemas.FailureHTTP4xx] = uint64(c[0] + c[2])
	// Labels on every request: the two models differ on `discordant` of them, the shadow
	// right on half of those plus accuracyDiff.
	shadowOnly := w.discordant/2 + m.accuracyDiff/2
	champOnly := w.discordant/2 - m.accuracyDiff/2
	l := multinomial(r, n, []float64{w.accuracy - champOnly, champOnly, shadowOnly})
	win.Paired = window.Paired{N: uint64(n), Decided: uint64(n), ChampionOnly: uint64(l[1]), ShadowOnly: uint64(l[2])}
	win.Champion.Labels = window.Labels{N: uint64(n), Decided: uint64(n), Correct: uint64(l[0] + l[1])}
	win.Shadow.Labels = window.Labels{N: uint64(n), Decided: uint64(n), Correct: uint64(l[0] + l[2])}
	return win
}

// vsBaseline sets cand's per-request latency differences against the noise baseline's.
func (w *world) vsBaseline(r *rand.Rand, cand *window.Window, n int, m, base model) {
	cand.LatencyVsBaseline = moments(r, n, w.latMean*(m.latencyScale-base.latencyScale), w.latVar*(m.latencyScale*m.latencyScale+base.latencyScale*base.latencyScale))
}

func addBins(r *rand.Rand, d interface{ AddWeighted(float64, uint64) error }, n int, values, p []float64, scale float64) {
	for i, k := range multinomial(r, n, p) {
		if k > 0 {
			_ = d.AddWeighted(values[i]*scale, uint64(k))
		}
	}
}

// moments draws the count, sum and sum of squares of n independent values of mean mu and
// variance v (normal approximations: n is thousands).
func moments(r *rand.Rand, n int, mu, v float64) window.Moments {
	fn := float64(n)
	sum := fn*mu + math.Sqrt(fn*v)*r.NormFloat64()
	sumSq := v*(fn+math.Sqrt(2*fn)*r.NormFloat64()) + sum*sum/fn
	return window.Moments{N: uint64(n), Sum: sum, SumSq: max(sumSq, sum*sum/fn)}
}

// multinomial draws counts of n trials over the probabilities p (the rest: none of them).
func multinomial(r *rand.Rand, n int, p []float64) []int {
	out := make([]int, len(p))
	left, rest := n, 1.0
	for i, pi := range p {
		if left == 0 || rest <= 0 {
			break
		}
		out[i] = binomial(r, left, min(1, pi/rest))
		left -= out[i]
		rest -= pi
	}
	return out
}

// binomial draws from Binomial(n, p): exact (geometric gaps) for small means, normal with
// rounding for large ones.
func binomial(r *rand.Rand, n int, p float64) int {
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case p > 0.5:
		return n - binomial(r, n, 1-p)
	}
	mean := float64(n) * p
	if mean < 30 {
		q, x, at := math.Log1p(-p), 0, 0
		for {
			at += int(math.Log(1-r.Float64())/q) + 1
			if at > n {
				return x
			}
			x++
		}
	}
	k := int(math.Round(mean + math.Sqrt(mean*(1-p))*r.NormFloat64()))
	return max(0, min(n, k))
}

// normQuantile is the standard normal quantile.
func normQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }
