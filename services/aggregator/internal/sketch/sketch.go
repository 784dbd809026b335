// Package sketch holds the aggregator's mergeable summaries and the statistics computed from
// them: t-digests (github.com/caio/go-tdigest/v4, compression 100) for latencies and numeric
// predictions, class counts for categorical predictions, and from those the quantiles, the
// population stability index (PSI), the two-sample Kolmogorov-Smirnov statistic and the
// chi-square test of two class distributions.
//
// Digests serialize their centroids at full precision (float64 mean, integer count):
// go-tdigest's own AsBytes stores means as float32 deltas, which moves values around 1e12 by
// tens of thousands after a round trip. Non-finite values are rejected with ErrNonFinite
// (go-tdigest rejects NaN but silently accepts ±Inf); callers count them.
package sketch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	tdigest "github.com/caio/go-tdigest/v4"
)

// Compression of every digest: about 100 centroids' worth of accuracy, ≈ 1-3 KB serialized.
const Compression = 100

// ErrNonFinite is returned for NaN and ±Inf values, which a digest cannot hold.
var ErrNonFinite = errors.New("value is not finite")

// Digest summarizes a distribution of float64 values. The zero value is not usable: call New.
// A Digest is not safe for concurrent use.
type Digest struct {
	td  *tdigest.TDigest
	buf []float64 // values not added to td yet (see flush)

	scratch []float64 // reused by table
}

// bufferSize is how many values a digest buffers before adding them to the t-digest sorted
// and with equal values collapsed into one weighted add: go-tdigest is slow on ties (a stream
// of equal latencies cost 11 µs per value), and ties are common (microsecond latencies,
// rounded scores).
const bufferSize = 512

// New returns an empty digest.
func New() *Digest {
	td, err := tdigest.New(tdigest.Compression(Compression))
	if err != nil {
		panic(err) // only for an invalid compression constant
	}
	return &Digest{td: td}
}

// Add adds one value.
func (d *Digest) Add(x float64) error {
	return d.AddWeighted(x, 1)
}

// AddWeighted adds a value n times.
func (d *Digest) AddWeighted(x float64, n uint64) error {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return ErrNonFinite
	}
	if n == 0 {
		return nil
	}
	if n == 1 {
		d.buf = append(d.buf, x)
		if len(d.buf) >= bufferSize {
			d.flush()
		}
		return nil
	}
	return d.td.AddWeighted(x, n)
}

// flush adds the buffered values, each distinct value once with its multiplicity, in a
// random order of distinct values (t-digests do not like sorted input).
func (d *Digest) flush() {
	if len(d.buf) == 0 {
		return
	}
	sort.Float64s(d.buf)
	type run struct {
		v float64
		n uint64
	}
	runs := make([]run, 0, len(d.buf))
	for _, v := range d.buf {
		if k := len(runs); k > 0 && runs[k-1].v == v {
			runs[k-1].n++
		} else {
			runs = append(runs, run{v, 1})
		}
	}
	d.buf = d.buf[:0]
	// Visit the runs with a prime stride (7919 > bufferSize, so coprime with their count):
	// every run once, in a scrambled but deterministic order.
	for i, k := 0, 0; i < len(runs); i++ {
		_ = d.td.AddWeighted(runs[k].v, runs[k].n) // finite by construction
		k = (k + 7919) % len(runs)
	}
}

// Merge adds every value of o to d.
func (d *Digest) Merge(o *Digest) error {
	if o == nil || o.Count() == 0 {
		return nil
	}
	d.flush()
	return d.td.Merge(o.td)
}

// Count is the number of values added.
func (d *Digest) Count() uint64 {
	d.flush()
	return d.td.Count()
}

// Quantile returns the value below which a fraction q of the values fall (q is clamped to
// [0, 1]); NaN when the digest is empty.
func (d *Digest) Quantile(q float64) float64 {
	if d.Count() == 0 {
		return math.NaN()
	}
	return d.td.Quantile(min(1, max(0, q)))
}

// CDF returns the fraction of values at or below x (estimated); NaN when empty.
func (d *Digest) CDF(x float64) float64 {
	if d.Count() == 0 {
		return math.NaN()
	}
	return d.td.CDF(x)
}

// centroids returns the centroids in ascending order of mean.
func (d *Digest) centroids() (means []float64, counts []uint64) {
	d.flush()
	means, counts = make([]float64, 0, 1024), make([]uint64, 0, 1024)
	d.td.ForEachCentroid(func(mean float64, count uint64) bool {
		means = append(means, mean)
		counts = append(counts, count)
		return true
	})
	return means, counts
}

const encodingVersion = 1

// MarshalBinary encodes the centroids at full precision: a version byte, the centroid count
// (uvarint), then per centroid the mean (8 bytes, little-endian IEEE 754) and count (uvarint).
func (d *Digest) MarshalBinary() ([]byte, error) {
	means, counts := d.centroids()
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(means)*10)
	b = append(b, encodingVersion)
	b = binary.AppendUvarint(b, uint64(len(means)))
	for i := range means {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(means[i]))
		b = binary.AppendUvarint(b, counts[i])
	}
	return b, nil
}

// UnmarshalBinary replaces d by the digest MarshalBinary encoded.
func (d *Digest) UnmarshalBinary(b []byte) error {
	if len(b) < 1 || b[0] != encodingVersion {
		return fmt.Errorf("digest: unknown encoding version")
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return fmt.Errorf("digest: bad centroid count")
	}
	b = b[k:]
	fresh := New()
	for range n {
		if len(b) < 8 {
			return fmt.Errorf("digest: truncated")
		}
		mean := math.Float64frombits(binary.LittleEndian.Uint64(b))
		b = b[8:]
		count, k := binary.Uvarint(b)
		if k <= 0 {
			return fmt.Errorf("digest: truncated")
		}
		b = b[k:]
		if err := fresh.AddWeighted(mean, count); err != nil {
			return fmt.Errorf("digest: centroid: %w", err)
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("digest: %d trailing bytes", len(b))
	}
	*d = *fresh
	return nil
}

// PSIEpsilon is the floor of a bin's share in PSI: an empty bin counts as 0.01 % of the values,
// which keeps the logarithm finite (a bin empty on one side contributes about
// share × ln(share / 0.0001)).
const PSIEpsilon = 1e-4

// PSI is the population stability index of cur against ref over bins bins whose edges are
// ref's quantiles (deciles for 10): Σ (c − r) · ln(c / r) over the bins' shares r and c, each
// share floored at PSIEpsilon. Common reading: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2
// significant shift. NaN when either digest is empty.
func PSI(ref, cur *Digest, bins int) float64 {
	psi, _ := Compare(ref, cur, bins)
	return psi
}

// Compare returns PSI(ref, cur, bins) and KS(ref, cur), sharing the work of both.
func Compare(ref, cur *Digest, bins int) (psi, ks float64) {
	if ref.Count() == 0 || cur.Count() == 0 || bins < 2 {
		return math.NaN(), math.NaN()
	}
	tr, tc := ref.table(), cur.table()
	edges := make([]float64, 0, bins-1)
	for i := 1; i < bins; i++ {
		edges = append(edges, ref.Quantile(float64(i)/float64(bins)))
	}
	return psiFromCDFs(edges, tr.at, tc.at), ksOf(tr, tc)
}

func psiFromCDFs(edges []float64, ref, cur func(float64) float64) float64 {
	psi := 0.0
	prevR, prevC := 0.0, 0.0
	for i := 0; i <= len(edges); i++ {
		r, c := 1.0, 1.0
		if i < len(edges) {
			r, c = ref(edges[i]), cur(edges[i])
		}
		psi += psiTerm(r-prevR, c-prevC)
		prevR, prevC = r, c
	}
	return psi
}

func psiTerm(r, c float64) float64 {
	r, c = max(r, PSIEpsilon), max(c, PSIEpsilon)
	return (c - r) * math.Log(c/r)
}

// KS is the two-sample Kolmogorov-Smirnov statistic: the largest difference between the two
// estimated CDFs, evaluated at every centroid of both digests. NaN when either is empty.
func KS(a, b *Digest) float64 {
	if a.Count() == 0 || b.Count() == 0 {
		return math.NaN()
	}
	return ksOf(a.table(), b.table())
}

func ksOf(ta, tb *cdfTable) float64 {
	if len(ta.means) < 2 || len(tb.means) < 2 {
		ks := 0.0
		for _, x := range append(append([]float64(nil), ta.means...), tb.means...) {
			ks = max(ks, math.Abs(ta.at(x)-tb.at(x)))
		}
		return ks
	}
	// Both mean lists are sorted: sweep them together, each table's centroid index moving
	// forward only (the cursor logic inlined: this loop is most of the cost of KS).
	ks := 0.0
	i, j, ka, kb := 0, 0, 0, 0
	na, nb := len(ta.means), len(tb.means)
	for i < na || j < nb {
		var x float64
		if j == nb || (i < na && ta.means[i] <= tb.means[j]) {
			x = ta.means[i]
			i++
		} else {
			x = tb.means[j]
			j++
		}
		for ka < len(ta.upper) && !(x < ta.upper[ka]) {
			ka++
		}
		for kb < len(tb.upper) && !(x < tb.upper[kb]) {
			kb++
		}
		ks = max(ks, math.Abs(ta.eval(ka, x)-tb.eval(kb, x)))
	}
	return ks
}

// cdfTable evaluates a digest's CDF in O(log n) per point, with go-tdigest's interpolation
// (each centroid's mass spread linearly between the midpoints to its neighbours), where
// go-tdigest's own CDF scans every centroid per call (PSI and KS went from 5 ms to microseconds).
// Centroid k (k < n−1) covers [lower[k], upper[k]); within it the CDF is
// base[k] + slope[k]·(x − lower[k]), precomputed so that an evaluation is one multiply-add.
type cdfTable struct {
	means        []float64
	lower, upper []float64
	base, slope  []float64
}

func (d *Digest) table() *cdfTable {
	d.flush()
	total := float64(d.td.Count())
	// One allocation for all columns; most digests hold a few hundred centroids.
	var means, counts []float64
	buf := d.scratch[:0]
	d.td.ForEachCentroid(func(mean float64, count uint64) bool {
		buf = append(buf, mean, float64(count))
		return true
	})
	d.scratch = buf
	n := len(buf) / 2
	cols := make([]float64, 6*n)
	means, counts = cols[:n], cols[n:2*n]
	for i := range n {
		means[i], counts[i] = buf[2*i], buf[2*i+1]
	}
	t := &cdfTable{means: means}
	if n < 2 {
		return t
	}
	t.lower, t.upper, t.base, t.slope = cols[2*n:3*n-1], cols[3*n:4*n-1], cols[4*n:5*n-1], cols[5*n:6*n-1]
	cum := 0.0
	for k := 0; k < n-1; k++ {
		right := (means[k+1] - means[k]) / 2
		left := right
		if k > 0 {
			left = (means[k] - means[k-1]) / 2
		}
		t.lower[k], t.upper[k] = means[k]-left, means[k]+right
		if span := right + left; span > 0 {
			t.base[k], t.slope[k] = cum/total, counts[k]/(span*total)
		} else {
			t.base[k] = (cum + counts[k]) / total
		}
		cum += counts[k]
	}
	return t
}

// at returns the estimated fraction of values at or below x.
func (t *cdfTable) at(x float64) float64 {
	switch len(t.means) {
	case 0:
		return math.NaN()
	case 1:
		if x < t.means[0] {
			return 0
		}
		return 1
	}
	return t.eval(sort.Search(len(t.upper), func(i int) bool { return x < t.upper[i] }), x)
}

// eval interpolates within centroid k (the first whose span ends after x).
func (t *cdfTable) eval(k int, x float64) float64 {
	if k == len(t.upper) {
		return 1
	}
	return max(0, t.base[k]+t.slope[k]*(x-t.lower[k]))
}

// Classes counts categorical predictions (class label → count).
type Classes map[string]uint64

// Total is the number of predictions counted.
func (c Classes) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// Merge adds o's counts to c.
func (c Classes) Merge(o Classes) {
	for k, v := range o {
		c[k] += v
	}
}

func keys(a, b Classes) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range []Classes{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ClassPSI is the PSI of cur against ref with one bin per class (shares floored at
// PSIEpsilon). NaN when either is empty.
func ClassPSI(ref, cur Classes) float64 {
	nr, nc := float64(ref.Total()), float64(cur.Total())
	if nr == 0 || nc == 0 {
		return math.NaN()
	}
	psi := 0.0
	for _, k := range keys(ref, cur) {
		psi += psiTerm(float64(ref[k])/nr, float64(cur[k])/nc)
	}
	return psi
}

// ChiSquare tests whether two class distributions are the same (a 2 × k contingency table):
// it returns the statistic, the degrees of freedom (k − 1) and the p-value. Classes seen on
// neither side are ignored; p is NaN with fewer than two classes or an empty side.
func ChiSquare(a, b Classes) (stat float64, df int, p float64) {
	na, nb := float64(a.Total()), float64(b.Total())
	ks := keys(a, b)
	if na == 0 || nb == 0 || len(ks) < 2 {
		return 0, 0, math.NaN()
	}
	n := na + nb
	for _, k := range ks {
		col := float64(a[k] + b[k])
		for _, side := range []struct{ obs, rows float64 }{{float64(a[k]), na}, {float64(b[k]), nb}} {
			exp := side.rows * col / n
			stat += (side.obs - exp) * (side.obs - exp) / exp
		}
	}
	df = len(ks) - 1
	return stat, df, gammaQ(float64(df)/2, stat/2)
}

// gammaQ is the regularized upper incomplete gamma function Q(s, x), by its series for
// x < s + 1 and its continued fraction otherwise.
func gammaQ(s, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(s)
	if x < s+1 {
		sum, term := 1/s, 1/s
		for n := 1; n < 1000; n++ {
			term *= x / (s + float64(n))
			sum += term
			if term < sum*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+s*math.Log(x)-lg)
	}
	// Lentz's method for the continued fraction of Q.
	const tiny = 1e-300
	bb := x + 1 - s
	c, d := 1/tiny, 1/bb
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - s)
		bb += 2
		d = an*d + bb
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = bb + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-x+s*math.Log(x)-lg) * h
}
