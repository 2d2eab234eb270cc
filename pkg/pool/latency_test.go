package pool

import (
	"testing"
	"time"
)

func TestLatencyBins(t *testing.T) {
	// Every duration falls in a bin whose upper bound is above it and
	// within a quarter power of two.
	for _, d := range []time.Duration{0, time.Microsecond, 3 * time.Microsecond, 5 * time.Microsecond, 999 * time.Microsecond,
		time.Millisecond, 7 * time.Millisecond, 20 * time.Millisecond, time.Second, 90 * time.Second} {
		b := bin(d)
		up := binUpper(b)
		if up <= d && d < binUpper(latencyBins-1) {
			t.Errorf("bin(%v) = %d with upper bound %v; want a bound above it", d, b, up)
		}
		if d >= 4*time.Microsecond && float64(up) > float64(d)*1.26 {
			t.Errorf("bin(%v) upper bound %v; want within 26%%", d, up)
		}
		if b > 0 && binUpper(b-1) > d {
			t.Errorf("bin(%v) = %d but the bin below ends at %v", d, b, binUpper(b-1))
		}
	}
}

func TestLatencyQuantiles(t *testing.T) {
	var l Latency
	now := time.Unix(1_000_000, 0)
	// 98 fast answers and 2 slow ones in the window.
	for range 98 {
		l.Observe(2*time.Millisecond, now)
	}
	l.Observe(500*time.Millisecond, now.Add(-3*time.Second))
	l.Observe(500*time.Millisecond, now.Add(-3*time.Second))
	p50, p99, n := l.Quantiles(now)
	if n != 100 {
		t.Fatalf("got %d in the window; want 100", n)
	}
	if p50 < 2*time.Millisecond || p50 > 3*time.Millisecond {
		t.Errorf("got p50 %v; want about 2ms", p50)
	}
	if p99 < 500*time.Millisecond || p99 > 650*time.Millisecond {
		t.Errorf("got p99 %v; want about 500ms", p99)
	}
	// Eleven seconds later the window is empty, the total is not.
	if _, _, n := l.Quantiles(now.Add(11 * time.Second)); n != 0 {
		t.Errorf("got %d in the window 11s later; want 0", n)
	}
	count, sum := l.Cumulative(nil)
	if count != 100 || sum != 98*2*time.Millisecond+time.Second {
		t.Errorf("got cumulative count %d sum %v; want 100 and %v", count, sum, 98*2*time.Millisecond+time.Second)
	}
	// A slot reused ten seconds later starts over.
	l.Observe(time.Millisecond, now.Add(10*time.Second))
	if _, _, n := l.Quantiles(now.Add(10 * time.Second)); n != 1 {
		t.Errorf("got %d in the window after a slot was reused; want 1 (only the new one)", n)
	}
}

func BenchmarkLatencyObserve(b *testing.B) {
	var l Latency
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Observe(3*time.Millisecond, now)
		}
	})
}
