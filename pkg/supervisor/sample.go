package supervisor

import (
	"context"
	"time"

	ps "github.com/shirou/gopsutil/v4/process"
)

// sample reads the CPU and memory of every worker once per
// SampleInterval and stores them on the process in the pool, where
// /stats and the max_memory check read them. A worker's figures are its
// process tree's: the process started and every process under it, so
// that a worker kept as a shell ("cd app && node app.js") or a program
// that forks its own (Node's cluster mode) is measured by what it runs.
// It runs outside the loop goroutine, so reading /proc never delays a
// restart; for the same reason it gets its interval as an argument
// rather than reading s.spec, which the loop owns (Configure replaces
// it).
func (s *Supervisor) sample(ctx context.Context, interval time.Duration) {
	seen := map[int]*last{}
	t := time.NewTicker(interval)
	defer t.Stop()
	var kids map[int][]int
	for round := 0; ; round++ {
		if round%treeEvery == 0 || s.newWorkerProcess(seen) {
			kids = children()
		}
		live := map[int]bool{}
		for _, w := range s.pool.Workers() {
			h := w.Process()
			if h == nil || h.Pid() == 0 {
				continue
			}
			var percent float64
			var rss uint64
			measured := false
			for _, pid := range tree(h.Pid(), kids) {
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
				if mem.RSS == 0 || cpu < l.cpuSecs {
					// A process gone meanwhile: gopsutil on macOS
					// reads zeros for it, with no error.
					continue
				}
				if !l.at.IsZero() {
					if el := now.Sub(l.at).Seconds(); el > 0 {
						percent += (cpu - l.cpuSecs) / el * 100
					}
				}
				l.cpuSecs, l.at = cpu, now
				rss += mem.RSS
				measured = true
			}
			if measured {
				h.SetUsage(float64(int64(percent*10))/10, rss)
			}
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

// newWorkerProcess reports whether a worker's process is not among the
// pids of seen: one started since the last sample.
func (s *Supervisor) newWorkerProcess(seen map[int]*last) bool {
	for _, w := range s.pool.Workers() {
		if pid := w.Pid(); pid > 0 && seen[pid] == nil {
			return true
		}
	}
	return false
}

// treeEvery is how many samples go by between two passes over /proc
// for the workers' process trees: a pass reads every process's stat
// file (1.4 ms for 75 processes on the project's machine), a sample only
// the workers' own. A worker's new child is measured from the next pass.
const treeEvery = 10

// last is a process's previous sample.
type last struct {
	proc    *ps.Process
	cpuSecs float64
	at      time.Time
}

// tree returns pid and the pids of every process under it, as kids
// (children's) says.
func tree(pid int, kids map[int][]int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < 4096; i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}
