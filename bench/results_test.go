package main

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"one", []float64{7}, 7},
		{"odd, unsorted", []float64{3, 1, 2}, 2},
		{"even takes the mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"outlier does not move it", []float64{100, 101, 1e9}, 101},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			if got := median(tt.in); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("median changed its input: got %v; want %v", tt.in, in)
			}
		})
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v; want NaN", got)
	}
}

func TestMedianDuration(t *testing.T) {
	ms := time.Millisecond
	if got := medianDuration([]time.Duration{9 * ms, 1 * ms, 5 * ms}); got != 5*ms {
		t.Errorf("odd: got %v; want 5ms", got)
	}
	if got := medianDuration([]time.Duration{2 * ms, 4 * ms}); got != 3*ms {
		t.Errorf("even: got %v; want 3ms", got)
	}
	if got := medianDuration(nil); got != 0 {
		t.Errorf("none: got %v; want 0", got)
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name   string
		a, b   float64
		want   float64
		wantOK bool
	}{
		{"plain", 30, 40, 0.75, true},
		{"zero numerator", 0, 40, 0, true},
		{"zero reference", 30, 0, 0, false},
		{"missing reference", 30, math.NaN(), 0, false},
		{"missing figure", math.NaN(), 40, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ratio(tt.a, tt.b)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	xs := []string{"A", "B", "C"}
	want := [][]string{{"A", "B", "C"}, {"B", "C", "A"}, {"C", "A", "B"}, {"A", "B", "C"}}
	for i, w := range want {
		if got := rotate(xs, i); !slices.Equal(got, w) {
			t.Errorf("rotate(%v, %d) = %v; want %v", xs, i, got, w)
		}
	}
	if !slices.Equal(xs, []string{"A", "B", "C"}) {
		t.Errorf("rotate changed its input: %v", xs)
	}
	if got := rotate([]string{}, 2); len(got) != 0 {
		t.Errorf("rotate(empty) = %v; want empty", got)
	}
}

func TestOrder(t *testing.T) {
	xs := []string{"A", "B", "C"}
	want := [][]string{{"A", "B", "C"}, {"C", "B", "A"}, {"B", "C", "A"}, {"A", "C", "B"}, {"C", "A", "B"}, {"B", "A", "C"}, {"A", "B", "C"}}
	for i, w := range want {
		if got := order(xs, i); !slices.Equal(got, w) {
			t.Errorf("order(%v, %d) = %v; want %v", xs, i, got, w)
		}
	}
	if !slices.Equal(xs, []string{"A", "B", "C"}) {
		t.Errorf("order changed its input: %v", xs)
	}
	// Five targets, three repetitions (the default): three different
	// ones go first.
	firsts := map[int]bool{}
	for rep := range 3 {
		firsts[order([]int{0, 1, 2, 3, 4}, rep)[0]] = true
	}
	if len(firsts) != 3 {
		t.Errorf("order: %d different targets first in 3 repetitions; want 3", len(firsts))
	}
}

func TestSummary(t *testing.T) {
	ms := time.Millisecond
	s := &series{Samples: []sample{
		{RPS: 100, P99: 3 * ms, Errors: 1, RSS: 10 << 20},
		{Err: "wrk: boom"},
		{RPS: 300, P99: 1 * ms, Errors: 2, RSS: 14 << 20},
		{RPS: 200, P99: 2 * ms, RSS: 12 << 20},
	}}
	got := s.summary()
	want := summary{OK: true, Err: "wrk: boom", Runs: 3, Failed: 1, RPS: 200, P99: 2 * ms, Errors: 3, RSS: 12 << 20, RSSMax: 14 << 20}
	perRep := got.PerRep
	got.PerRep = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
	if len(perRep) != 4 || perRep[0] != 100 || !math.IsNaN(perRep[1]) || perRep[2] != 300 || perRep[3] != 200 {
		t.Errorf("PerRep = %v; want [100 NaN 300 200]", perRep)
	}
	failed := (&series{Samples: []sample{{Err: "did not start"}}}).summary()
	if failed.OK || failed.Err != "did not start" {
		t.Errorf("all failed: got %+v; want not OK with the error", failed)
	}
}

func TestResultsGet(t *testing.T) {
	r := &results{}
	k := key{Scenario: "a", Target: "nginx", Endpoint: "simple"}
	r.add(k, sample{RPS: 10})
	r.add(k, sample{RPS: 30})
	if got := r.get(k); !got.OK || got.RPS != 20 {
		t.Errorf("get = %+v; want OK with RPS 20", got)
	}
	if got := r.get(key{Scenario: "a", Target: "haproxy", Endpoint: "simple"}); got.OK {
		t.Errorf("unmeasured key: got %+v; want not OK", got)
	}
	if len(r.Series) != 1 {
		t.Errorf("got %d series; want 1", len(r.Series))
	}
}

// TestPairedRatios: each repetition against the same repetition of the
// reference, skipping those where either failed.
func TestPairedRatios(t *testing.T) {
	a := (&series{Samples: []sample{{RPS: 90}, {RPS: 120}, {Err: "boom"}, {RPS: 50}}}).summary()
	b := (&series{Samples: []sample{{RPS: 100}, {RPS: 100}, {RPS: 100}, {Err: "boom"}}}).summary()
	if got, want := pairedRatios(a, b), []float64{0.9, 1.2}; !slices.Equal(got, want) {
		t.Errorf("pairedRatios = %v; want %v", got, want)
	}
	g := throughputGoal("x", "≥ 1.00×", a, b, "ref", 1.0, false)
	if !strings.Contains(g.Got, "per repetition 0.90×–1.20×, 1 of 2 at ≥ 1.00×") {
		t.Errorf("goal text %q lacks the per-repetition spread", g.Got)
	}
}
