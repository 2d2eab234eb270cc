package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestReadCPUTimes(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		busy, total uint64
		err         bool
	}{
		{"linux 6", "cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 1 2 3 4\n", 170, 990, false},
		{"guest time, counted in user already", "cpu  100 5 50 800 20 3 2 10 7 1\n", 170, 990, false},
		{"old kernel, four fields", "cpu 1 2 3 4\n", 6, 10, false},
		{"not the cpu line", "intr 1 2 3 4 5\n", 0, 0, true},
		{"garbage", "cpu 1 x 3 4\n", 0, 0, true},
		{"empty", "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCPUTimes(strings.NewReader(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("got error %v; want error: %v", err, tt.err)
			}
			if got.busy != tt.busy || got.total != tt.total {
				t.Errorf("got busy=%d total=%d; want %d and %d", got.busy, got.total, tt.busy, tt.total)
			}
		})
	}
}

func TestBusyShare(t *testing.T) {
	a := cpuTimes{busy: 100, total: 1000}
	if got := busyShare(a, cpuTimes{busy: 150, total: 1100}); got != 0.5 {
		t.Errorf("got %v; want 0.5", got)
	}
	if got := busyShare(a, a); got != 0 {
		t.Errorf("no time passed: got %v; want 0", got)
	}
}

// TestSettleReportsGivingUp: settle says when it stopped waiting with the
// CPUs still busy, so that the run after it can be marked.
func TestSettleReportsGivingUp(t *testing.T) {
	clock := func(busyPerTick uint64) func() (cpuTimes, error) {
		var c cpuTimes
		return func() (cpuTimes, error) {
			c.busy += busyPerTick
			c.total += 100
			return c, nil
		}
	}
	ctx := context.Background()
	if idle := settleWith(ctx, clock(90), time.Millisecond, 20*time.Millisecond); idle {
		t.Errorf("CPUs 90%% busy throughout: got idle=true; want false")
	}
	if idle := settleWith(ctx, clock(5), time.Millisecond, 20*time.Millisecond); !idle {
		t.Errorf("CPUs 5%% busy: got idle=false; want true")
	}
}
