package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Settling: every measured run starts on an idle machine. When wrk stops,
// it closes its connections with up to 64 requests still in the workers;
// on /operacion-compleja that is about a second of work for two cores,
// which the workers finish anyway, and which would slow the next target's
// first second and put hundreds of milliseconds into its p99. The bench
// waits until the CPUs are idle, or settleMax at most.
const (
	settleWindow = 250 * time.Millisecond
	settleBusy   = 0.15 // the busy share of all CPUs over a window that counts as idle
	settleMax    = 15 * time.Second
)

// cpuTimes is the first line of /proc/stat: the time all CPUs spent busy
// and in total, in clock ticks.
type cpuTimes struct{ busy, total uint64 }

// readCPUTimes parses the aggregate "cpu" line of /proc/stat.
func readCPUTimes(r io.Reader) (cpuTimes, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		return cpuTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", strings.TrimSpace(line))
	}
	var t cpuTimes
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: field %d: %w", i+1, err)
		}
		// user nice system idle iowait irq softirq steal guest
		// guest_nice: idle and iowait are the idle ones; guest and
		// guest_nice are counted in user and nice already.
		if i >= 8 {
			continue
		}
		t.total += v
		if i != 3 && i != 4 {
			t.busy += v
		}
	}
	return t, nil
}

func sampleCPUTimes() (cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	return readCPUTimes(f)
}

// busyShare is the busy part of the CPU time between a and b.
func busyShare(a, b cpuTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

// settle waits until the CPUs were idle over one window, or settleMax.
// It reports false when it gave up with the CPUs still busy, so that the
// run that follows can be marked; without /proc/stat it does not wait,
// and reports true.
func settle(ctx context.Context) (idle bool) {
	return settleWith(ctx, sampleCPUTimes, settleWindow, settleMax)
}

func settleWith(ctx context.Context, sample func() (cpuTimes, error), window, limit time.Duration) bool {
	start := time.Now()
	prev, err := sample()
	if err != nil {
		return true
	}
	for time.Since(start) < limit {
		select {
		case <-ctx.Done():
			return true // interrupted: the run will not be recorded
		case <-time.After(window):
		}
		cur, err := sample()
		if err != nil {
			return true
		}
		if busyShare(prev, cur) < settleBusy {
			return true
		}
		prev = cur
	}
	return false
}
