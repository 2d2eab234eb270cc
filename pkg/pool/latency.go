package pool

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Latency records response times lock-free: a cumulative histogram since
// the start (for Prometheus) and a sliding window of per-second
// histograms (for p50 and p99 of the last LatencyWindow seconds). Bins
// are logarithmic, four per power of two of microseconds, so a quantile
// is exact to within 19%.
type Latency struct {
	total   [latencyBins]atomic.Uint64
	sumUsec atomic.Uint64
	window  [LatencyWindow]latencySecond
}

// LatencyWindow is the number of seconds the sliding quantiles cover.
const LatencyWindow = 10

const (
	subBins     = 4
	latencyBins = 40 * subBins // up to 2^40 µs: far beyond any timeout
)

type latencySecond struct {
	epoch atomic.Int64 // unix second the counts belong to
	count [latencyBins]atomic.Uint32
}

// bin returns the histogram bin of d.
func bin(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < subBins {
		return int(us)
	}
	exp := bits.Len64(us) - 1 // us in [2^exp, 2^(exp+1))
	sub := int((us >> (exp - 2)) & (subBins - 1))
	b := (exp-1)*subBins + sub
	if b >= latencyBins {
		return latencyBins - 1
	}
	return b
}

// binUpper returns the upper bound of bin b.
func binUpper(b int) time.Duration {
	if b < subBins {
		return time.Duration(b+1) * time.Microsecond
	}
	exp := b/subBins + 1
	sub := b % subBins
	lower := uint64(1)<<exp + uint64(sub)<<(exp-2)
	return time.Duration(lower+uint64(1)<<(exp-2)) * time.Microsecond
}

// Observe records one response time, at now.
func (l *Latency) Observe(d time.Duration, now time.Time) {
	b := bin(d)
	l.total[b].Add(1)
	l.sumUsec.Add(uint64(d / time.Microsecond))
	sec := now.Unix()
	s := &l.window[sec%LatencyWindow]
	if e := s.epoch.Load(); e != sec {
		// First observation of a new second in this slot: clear what
		// is left of ten seconds ago. Two recorders may race here and
		// lose a count or two; the window is an estimate.
		if s.epoch.CompareAndSwap(e, sec) {
			for i := range s.count {
				s.count[i].Store(0)
			}
		}
	}
	s.count[b].Add(1)
}

// Quantiles returns the p50 and p99 response times of the last
// LatencyWindow seconds before now, and how many responses they cover;
// zero when there were none.
func (l *Latency) Quantiles(now time.Time) (p50, p99 time.Duration, n uint64) {
	var merged [latencyBins]uint64
	cur := now.Unix()
	for i := range l.window {
		s := &l.window[i]
		if e := s.epoch.Load(); e <= cur-LatencyWindow || e > cur {
			continue
		}
		for b := range s.count {
			c := uint64(s.count[b].Load())
			merged[b] += c
			n += c
		}
	}
	if n == 0 {
		return 0, 0, 0
	}
	return quantile(&merged, n, 0.50), quantile(&merged, n, 0.99), n
}

func quantile(h *[latencyBins]uint64, n uint64, q float64) time.Duration {
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for b, c := range h {
		seen += c
		if seen >= rank && c > 0 {
			return binUpper(b)
		}
	}
	return binUpper(latencyBins - 1)
}

// The buckets Cumulative gives: a fixed set, the same for every worker
// and every scrape, as a sum across workers by bucket and Prometheus's
// rate() need. Their bounds are the powers of two of microseconds from
// 2^firstBucketExp (32 µs) to 2^lastBucketExp (67 s), where bins end.
const (
	firstBucketExp = 5
	lastBucketExp  = 26
)

// Cumulative calls fn for each bucket of the fixed set, in order, with
// its upper bound and the count of responses up to it since the start;
// it returns the total count and the sum of all response times.
func (l *Latency) Cumulative(fn func(upper time.Duration, cumulative uint64)) (count uint64, sum time.Duration) {
	e := firstBucketExp
	bound := func(e int) time.Duration { return time.Duration(1<<e) * time.Microsecond }
	for b := range l.total {
		// Bounds fall on bins' ends: the ones bin b starts past take
		// what came before it.
		for ; fn != nil && e <= lastBucketExp && binUpper(b) > bound(e); e++ {
			fn(bound(e), count)
		}
		count += l.total[b].Load()
	}
	for ; fn != nil && e <= lastBucketExp; e++ {
		fn(bound(e), count)
	}
	return count, time.Duration(l.sumUsec.Load()) * time.Microsecond
}
