package main

import (
	"strings"
	"testing"
	"time"
)

func TestThroughputGoal(t *testing.T) {
	ms := time.Millisecond
	ok := func(rps float64, p99 time.Duration, errs int64) summary {
		return summary{OK: true, Runs: 1, RPS: rps, P99: p99, Errors: errs}
	}
	timeouts := func(rps float64, errs, touts int64) summary {
		s := ok(rps, ms, errs)
		s.Timeouts = touts
		return s
	}
	failedRep := ok(1200, ms, 0)
	failedRep.Failed = 1
	tests := []struct {
		name     string
		got, ref summary
		min      float64
		p99      bool
		wantMet  bool
		wantGot  string
	}{
		{"above the ratio", ok(700, ms, 0), ok(1000, ms, 0), 0.6, false, true, "0.70×"},
		{"below the ratio", ok(500, ms, 0), ok(1000, ms, 0), 0.6, false, false, "0.50×"},
		{"exactly the ratio", ok(1000, ms, 0), ok(1000, ms, 0), 1.0, false, true, "1.00×"},
		{"fast enough but slower p99", ok(1200, 3*ms, 0), ok(1000, 2*ms, 0), 1.0, true, false, "p99 3.00 ms vs 2.00 ms"},
		{"no errors shown", ok(1200, ms, 0), ok(1000, ms, 0), 1.0, false, true, "errors 0 vs 0"},
		{"errors on the measured side", ok(1200, ms, 4), ok(1000, ms, 0), 1.0, false, false, "errors 4 vs 0"},
		{"errors on the reference side", ok(1200, ms, 0), ok(1000, ms, 7), 0.6, false, false, "errors 0 vs 7"},
		{"only timeouts on the reference side", ok(1200, ms, 0), timeouts(1000, 7, 7), 0.6, false, true, "errors 0 vs 7 (nginx 7 of them timeouts)"},
		{"timeouts and others on the reference side", ok(1200, ms, 0), timeouts(1000, 9, 7), 0.6, false, false, "errors 0 vs 9 (nginx 7 of them timeouts)"},
		{"timeouts on the measured side", timeouts(1200, 3, 3), ok(1000, ms, 0), 0.6, false, false, "errors 3 vs 0"},
		{"a failed repetition", failedRep, ok(1000, ms, 0), 1.0, false, false, "failed repetitions 1 vs 0"},
		{"target failed", summary{Err: "engine: want one of httputil"}, ok(1000, ms, 0), 1.0, false, false, "no figure: engine"},
		{"reference failed", ok(1000, ms, 0), summary{Err: "nginx is not installed"}, 1.0, false, false, "no nginx figure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := throughputGoal("g", "w", tt.got, tt.ref, "nginx", tt.min, tt.p99)
			if g.Met != tt.wantMet || !strings.Contains(g.Got, tt.wantGot) {
				t.Errorf("got met=%v %q; want met=%v and %q in it", g.Met, g.Got, tt.wantMet, tt.wantGot)
			}
		})
	}
}

// TestEvalGoalsErrors: a balancer that answers every request with an
// error at once shows a high req/s in wrk's figures; no goal may read
// that as met, and the row must say why.
func TestEvalGoalsErrors(t *testing.T) {
	ms := time.Millisecond
	r := &results{}
	for range 3 {
		r.add(key{Scenario: "a", Target: "balancer-fasthttp", Endpoint: "simple"}, sample{RPS: 30000, P99: ms, Requests: 300000, Errors: 300000})
		r.add(key{Scenario: "a", Target: "nginx", Endpoint: "simple"}, sample{RPS: 20000, P99: 2 * ms, Requests: 200000})
		r.add(key{Scenario: "b", Target: "balancer-fasthttp", Endpoint: "simple"}, sample{RPS: 9000, P99: ms, Requests: 90000})
		r.add(key{Scenario: "b", Target: "node-cluster", Endpoint: "simple"}, sample{RPS: 8000, P99: ms, Requests: 80000, Errors: 12})
	}
	var seen int
	for _, g := range evalGoals(r) {
		switch g.Name {
		case "fasthttp vs nginx (a, simple)":
			seen++
			if g.Met || !strings.Contains(g.Got, "errors 900000 vs 0") {
				t.Errorf("%s: got met=%v %q; want not met, with errors 900000 vs 0", g.Name, g.Met, g.Got)
			}
		case "-cmd node, fasthttp vs Node cluster (b, simple)":
			seen++
			if g.Met || !strings.Contains(g.Got, "errors 0 vs 36") {
				t.Errorf("%s: got met=%v %q; want not met, with errors 0 vs 36", g.Name, g.Met, g.Got)
			}
		}
	}
	if seen != 2 {
		t.Errorf("got %d of the goals; want 2", seen)
	}
}

// TestPerRepetitionRange: the ends of the per-repetition range are not
// rounded onto the goal's line, as the headline ratio is not.
func TestPerRepetitionRange(t *testing.T) {
	perRep := func(rps ...float64) summary {
		return summary{OK: true, Runs: len(rps), RPS: median(rps), PerRep: rps}
	}
	tests := []struct {
		name     string
		got, ref summary
		min      float64
		want     string
	}{
		{"lowest just under the line", perRep(947.7, 1060), perRep(1000, 1000), 0.95, "1.00× (per repetition 0.948×–1.06×, 1 of 2 at ≥ 0.95×; medians 1 004 vs 1 000 req/s, 1.00×)"},
		{"highest just under the line", perRep(990, 998.1), perRep(1000, 1000), 1.0, "per repetition 0.99×–0.998×, 0 of 2 at ≥ 1.00×"},
		{"clear of the line", perRep(900, 1100), perRep(1000, 1000), 0.95, "per repetition 0.90×–1.10×, 1 of 2 at ≥ 0.95×"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := throughputGoal("g", "w", tt.got, tt.ref, "ref", tt.min, false)
			if !strings.Contains(g.Got, tt.want) {
				t.Errorf("got %q; want %q in it", g.Got, tt.want)
			}
		})
	}
}

// TestVerdictIsPaired: the verdict is on the repetitions' own ratios, not
// on the ratio of the medians, which compares figures from different
// minutes of a machine whose capacity drifts; either may be the higher.
func TestVerdictIsPaired(t *testing.T) {
	perRep := func(rps ...float64) summary {
		return summary{OK: true, Runs: len(rps), RPS: median(rps), PerRep: rps}
	}
	// The machine slows down over the run: each repetition the balancer
	// is ahead of its reference, but its median comes from the slow end.
	slowing := throughputGoal("g", "w", perRep(110, 88, 55), perRep(100, 80, 50), "ref", 1.0, false)
	if !slowing.Met || !strings.HasPrefix(slowing.Got, "1.10×") || !strings.Contains(slowing.Got, "medians 88.0 vs 80.0 req/s, 1.10×") {
		t.Errorf("slowing: got met=%v %q; want met at 1.10×", slowing.Met, slowing.Got)
	}
	// Medians from different repetitions: 100/95 reads 1.05×, but the
	// balancer was behind in two repetitions of three.
	behind := throughputGoal("g", "w", perRep(100, 60, 120), perRep(95, 70, 130), "ref", 1.0, false)
	if behind.Met || !strings.HasPrefix(behind.Got, "0.92×") || !strings.Contains(behind.Got, "1 of 3 at ≥ 1.00×") {
		t.Errorf("behind: got met=%v %q; want not met at 0.92×", behind.Met, behind.Got)
	}
}

func TestEvalGoalsRSS(t *testing.T) {
	r := &results{}
	r.add(key{Scenario: "a", Target: "balancer-httputil", Endpoint: "simple"}, sample{RPS: 1, RSS: 20 << 20})
	r.add(key{Scenario: "e-conc", Target: "fasthttp", Endpoint: "simple", Param: 64}, sample{RPS: 1, RSS: 40 << 20})
	var seen int
	for _, g := range evalGoals(r) {
		switch g.Name {
		case "balancer RSS, httputil (c=64, simple)":
			seen++
			if !g.Met || !strings.Contains(g.Got, "20.0 MiB") {
				t.Errorf("httputil: got met=%v %q; want met with 20.0 MiB", g.Met, g.Got)
			}
		case "balancer RSS, fasthttp (c=64, simple)":
			seen++
			if g.Met || !strings.Contains(g.Got, "scenario e") {
				t.Errorf("fasthttp: got met=%v %q; want not met, from scenario e", g.Met, g.Got)
			}
		}
	}
	if seen != 2 {
		t.Errorf("got %d RSS goals; want 2", seen)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{fmtRPS(12345.6), "12 346"},
		{fmtRPS(999), "999"},
		{fmtRPS(1234567), "1 234 567"},
		{fmtRPS(12.34), "12.3"},
		{fmtDur(1234 * time.Microsecond), "1.23 ms"},
		{fmtDur(1234 * time.Millisecond), "1234 ms"},
		{fmtDur(12 * time.Second), "12.0 s"},
		{fmtMiB(30 << 20), "30.0 MiB"},
		{fmtRatio(0.954), "0.95×"},
		{fmtRatioAgainst(0.9477, 0.95), "0.948×"}, // not met: must not read 0.95×
		{fmtRatioAgainst(0.954, 0.95), "0.95×"},
		{fmtRatioAgainst(0.9, 0.95), "0.90×"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q; want %q", tt.got, tt.want)
		}
	}
}

// TestBoundGoals: the bounded row of scenario b is read against Node's
// cluster on the same two lines as the goals, and only when the run has
// it.
func TestBoundGoals(t *testing.T) {
	ms := time.Millisecond
	r := &results{}
	for range 3 {
		r.add(key{Scenario: "b", Target: "node-cluster", Endpoint: "compleja"}, sample{RPS: 45, P99: 7000 * ms, Requests: 900, Errors: 18, Timeouts: 18})
		r.add(key{Scenario: "b", Target: "node-cluster", Endpoint: "simple"}, sample{RPS: 8000, P99: 30 * ms, Requests: 80000})
	}
	if gs := boundGoals(r); gs != nil {
		t.Fatalf("without the bounded row: got %v; want none", gs)
	}
	for range 3 {
		r.add(key{Scenario: "b", Target: bMaxConns, Endpoint: "compleja"}, sample{RPS: 46, P99: 1800 * ms, Requests: 920})
		r.add(key{Scenario: "b", Target: bMaxConns, Endpoint: "simple"}, sample{RPS: 6000, P99: 40 * ms, Requests: 60000})
	}
	gs := boundGoals(r)
	if len(gs) != 2 {
		t.Fatalf("got %d lines; want 2", len(gs))
	}
	if !gs[0].Met || !strings.Contains(gs[0].Name, "compleja") || !strings.Contains(gs[0].Got, "errors 0 vs 54") {
		t.Errorf("compleja: got met=%v %q %q; want met, 0 errors against Node's 54 timeouts", gs[0].Met, gs[0].Name, gs[0].Got)
	}
	if gs[1].Met || !strings.Contains(gs[1].Name, "simple") || !strings.Contains(gs[1].Got, "0.75×") {
		t.Errorf("simple: got met=%v %q %q; want not met at 0.75×", gs[1].Met, gs[1].Name, gs[1].Got)
	}
}
