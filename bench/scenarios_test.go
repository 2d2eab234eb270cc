package main

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestWorkerSweepOrder: the worker sweep runs both engines at one worker
// count back to back, alternating which goes first, and moves on to the
// next count only then. The balancer binary does not exist here, so every
// start fails at once and nothing is run.
func TestWorkerSweepOrder(t *testing.T) {
	var out strings.Builder
	b := &bench{
		opts:  options{reps: 2},
		tools: tools{balancer: "/nonexistent/balancer"},
		procs: &procs{dir: t.TempDir()},
		res:   &results{},
		cores: 1,
		out:   &out,
	}
	b.eWorkerSweep(context.Background())
	re := regexp.MustCompile(`rep (\d)\s+(\w+) workers=(\d)`)
	var got []string
	for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
		got = append(got, m[1]+" "+m[2]+" "+m[3])
	}
	want := []string{
		"1 httputil 1", "1 fasthttp 1", "1 httputil 2", "1 fasthttp 2",
		"2 fasthttp 2", "2 httputil 2", "2 fasthttp 1", "2 httputil 1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("runs in the order\n%q\nwant\n%q\n(progress:\n%s)", got, want, out.String())
	}
	for _, n := range []int{1, 2} {
		s := b.res.get(key{Scenario: "e-workers", Target: "fasthttp", Endpoint: "simple", Param: n})
		if s.Failed != 2 || s.OK {
			t.Errorf("workers=%d: got %d failed, OK %v; want both repetitions recorded as failed", n, s.Failed, s.OK)
		}
	}
	if len(b.procs.list) != 0 {
		t.Errorf("%d processes left; want none", len(b.procs.list))
	}
}
