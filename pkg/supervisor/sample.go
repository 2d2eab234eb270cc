package supervisor

import (
	"context"
	"time"

	ps "github.com/shirou/gopsutil/v4/process"
)

// sample reads the CPU and memory of every worker process once per
// SampleInterval and stores them on the process in the pool, where
// /stats and the max_memory check read them. It runs outside the loop
// goroutine, so reading /proc never delays a restart; for the same
// reason it gets its interval as an argument rather than reading s.spec,
// which the loop owns (Configure replaces it).
func (s *Supervisor) sample(ctx context.Context, interval time.Duration) {
	type last struct {
		proc    *ps.Process
		cpuSecs float64
		at      time.Time
	}
	seen := map[int]*last{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		live := map[int]bool{}
		for _, w := range s.pool.Workers() {
			h := w.Process()
			if h == nil || h.Pid() == 0 {
				continue
			}
			pid := h.Pid()
			live[pid] = true
			l := seen[pid]
			if l == nil {
				p, err := ps.NewProcessWithContext(ctx, int32(pid))
				if err != nil {
					continue
				}
				l = &last{proc: p}
				seen[pid] = l
			}
			now := time.Now()
			times, err := l.proc.TimesWithContext(ctx)
			if err != nil {
				continue
			}
			mem, err := l.proc.MemoryInfoWithContext(ctx)
			if err != nil {
				continue
			}
			cpu := times.User + times.System
			var percent float64
			if !l.at.IsZero() {
				if el := now.Sub(l.at).Seconds(); el > 0 {
					percent = float64(int64((cpu-l.cpuSecs)/el*100*10)) / 10
				}
			}
			l.cpuSecs, l.at = cpu, now
			h.SetUsage(percent, mem.RSS)
		}
		for pid := range seen {
			if !live[pid] {
				delete(seen, pid)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
