package stats

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/shirou/gopsutil/v4/process"
)

// Snapshot is the JSON document served at the stats path.
type Snapshot struct {
	UptimeS  float64  `json:"uptime_s"`
	Policy   string   `json:"policy"`
	Requests int64    `json:"requests"`
	Errors   int64    `json:"errors"`
	Retries  int64    `json:"retries"`
	Workers  []Worker `json:"workers"`
}

// Worker is one worker's row.
type Worker struct {
	ID         int        `json:"id"`
	Pid        int        `json:"pid"`
	Addr       string     `json:"addr"`
	State      pool.State `json:"state"`
	Requests   int64      `json:"requests"`
	InFlight   int64      `json:"in_flight"`
	Errors     int64      `json:"errors"`
	Retries    int64      `json:"retries"`
	Restarts   int64      `json:"restarts"`
	UptimeS    float64    `json:"uptime_s"`
	CPUPercent float64    `json:"cpu_percent"`
	RSSBytes   uint64     `json:"rss_bytes"`
}

// Take reads the pool and the sampler (nil: no CPU or memory) now.
func Take(p *pool.Pool, s *Sampler, started, now time.Time) Snapshot {
	ws := p.Workers()
	snap := Snapshot{
		UptimeS:  round(now.Sub(started).Seconds()),
		Policy:   p.Policy(),
		Requests: p.Requests(),
		Errors:   p.Errors(),
		Retries:  p.Retries(),
		Workers:  make([]Worker, 0, len(ws)),
	}
	for _, w := range ws {
		row := Worker{
			ID:       w.ID(),
			Pid:      w.Pid(),
			Addr:     w.Addr(),
			State:    w.State(),
			Requests: w.Requests(),
			InFlight: w.InFlight(),
			Errors:   w.Errors(),
			Retries:  w.Retries(),
			Restarts: w.Restarts(),
			UptimeS:  round(w.Uptime(now).Seconds()),
		}
		if s != nil && row.Pid != 0 {
			row.CPUPercent, row.RSSBytes = s.Usage(row.Pid)
		}
		snap.Workers = append(snap.Workers, row)
	}
	return snap
}

func round(f float64) float64 { return float64(int64(f*1000)) / 1000 }

// Handler serves Take as JSON to GET and HEAD.
func Handler(p *pool.Pool, s *Sampler, started time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(Take(p, s, started, time.Now()))
	})
}

// Sampler keeps the latest CPU and memory reading of each worker process.
// The zero value is not usable; call NewSampler.
type Sampler struct {
	mu    sync.Mutex
	procs map[int]*sample // by pid
}

type sample struct {
	proc    *process.Process
	cpuSecs float64 // user+system at the last reading
	at      time.Time
	percent float64
	rss     uint64
}

// NewSampler returns an empty sampler.
func NewSampler() *Sampler { return &Sampler{procs: make(map[int]*sample)} }

// Usage returns the last CPU percentage (100 = one core) and resident
// memory of pid, zero when it has not been sampled yet.
func (s *Sampler) Usage(pid int) (float64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm, ok := s.procs[pid]; ok {
		return sm.percent, sm.rss
	}
	return 0, 0
}

// Run samples the pool's worker processes every interval until ctx is
// done.
func (s *Sampler) Run(ctx context.Context, p *pool.Pool, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.Sample(ctx, p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample reads every worker process once, and forgets processes that are
// gone.
func (s *Sampler) Sample(ctx context.Context, p *pool.Pool) {
	live := make(map[int]bool)
	for _, w := range p.Workers() {
		pid := w.Pid()
		if pid == 0 {
			continue
		}
		live[pid] = true
		s.mu.Lock()
		sm := s.procs[pid]
		s.mu.Unlock()
		if sm == nil {
			proc, err := process.NewProcessWithContext(ctx, int32(pid))
			if err != nil {
				continue
			}
			sm = &sample{proc: proc}
		}
		now := time.Now()
		times, err := sm.proc.TimesWithContext(ctx)
		if err != nil {
			continue
		}
		mem, err := sm.proc.MemoryInfoWithContext(ctx)
		if err != nil {
			continue
		}
		cpu := times.User + times.System
		s.mu.Lock()
		if !sm.at.IsZero() {
			if el := now.Sub(sm.at).Seconds(); el > 0 {
				sm.percent = round((cpu - sm.cpuSecs) / el * 100)
			}
		}
		sm.cpuSecs, sm.at, sm.rss = cpu, now, mem.RSS
		s.procs[pid] = sm
		s.mu.Unlock()
	}
	s.mu.Lock()
	for pid := range s.procs {
		if !live[pid] {
			delete(s.procs, pid)
		}
	}
	s.mu.Unlock()
}
