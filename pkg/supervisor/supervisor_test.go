package supervisor

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Factor: 1.5, Max: 15 * time.Second}
	tests := []struct {
		name    string
		crashes int
		want    time.Duration
	}{
		{"first crash", 1, 100 * time.Millisecond},
		{"second", 2, 150 * time.Millisecond},
		{"third", 3, 225 * time.Millisecond},
		{"capped", 20, 15 * time.Second},
		{"huge count stays capped", 100000, 15 * time.Second},
		{"zero counts as first", 0, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.Delay(tt.crashes); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// fakeProc is a process whose exit the test decides.
type fakeProc struct {
	pid      int
	env      []string
	exit     chan exitStatus
	once     sync.Once
	mu       sync.Mutex
	signals  []syscall.Signal
	termExit bool // exit when sent SIGTERM
	dead     atomic.Bool
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig syscall.Signal) error {
	if sig == 0 { // is the group still there? The fake is its own group.
		if p.dead.Load() {
			return os.ErrProcessDone
		}
		return nil
	}
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL || (sig == syscall.SIGTERM && p.termExit) {
		p.die(exitStatus{Code: -1, Signal: sig})
	}
	return nil
}

func (p *fakeProc) die(st exitStatus) {
	p.once.Do(func() {
		p.dead.Store(true)
		p.exit <- st
	})
}

func (p *fakeProc) Wait() exitStatus { return <-p.exit }

func (p *fakeProc) sent() []syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.signals)
}

// fakeStarter records every start.
type fakeStarter struct {
	mu       sync.Mutex
	procs    []*fakeProc
	started  chan *fakeProc
	termExit bool
	fail     atomic.Bool // every start fails, as with no such program
	// refuse, when set, fails the starts it returns true for. Set it
	// under mu.
	refuse func(id int, env []string) bool
}

// count returns how many processes were started.
func (f *fakeStarter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.procs)
}

func (f *fakeStarter) start(id int, argv, env []string) (process, error) {
	f.mu.Lock()
	refuse := f.refuse
	f.mu.Unlock()
	if f.fail.Load() || refuse != nil && refuse(id, env) {
		return nil, errors.New("fork/exec worker: no such file or directory")
	}
	f.mu.Lock()
	p := &fakeProc{pid: 1000 + len(f.procs), env: env, exit: make(chan exitStatus, 1), termExit: f.termExit}
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	f.started <- p
	return p, nil
}

type passCheck struct{}

func (passCheck) Check(context.Context, string) error { return nil }

func newTestSupervisor(st starter, b Backoff, grace time.Duration) (*Supervisor, *pool.Pool) {
	p := pool.New(new(pool.RoundRobin))
	s := newSupervisor(Spec{
		Argv:    []string{"worker"},
		Env:     []string{"HOME=/", "PORT=1", "WORKER_ID=99"},
		Grace:   grace,
		Backoff: b,
		Check:   passCheck{},
		Health:  health.Options{Interval: 5 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1, StartInterval: time.Millisecond},
	}, p, st)
	return s, p
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestRestartKeepsWorkerIDAndBacksOff(t *testing.T) {
	st := &fakeStarter{started: make(chan *fakeProc, 16), termExit: true}
	b := Backoff{Initial: 20 * time.Millisecond, Factor: 2, Max: 80 * time.Millisecond, Reset: time.Hour}
	s, p := newTestSupervisor(st, b, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, 2) }()

	first := map[string]*fakeProc{}
	for range 2 {
		pr := <-st.started
		first[envValue(pr.env, "WORKER_ID")] = pr
	}
	if first["1"] == nil || first["2"] == nil {
		t.Fatalf("got WORKER_IDs %v; want 1 and 2", keys(first))
	}
	for _, pr := range first {
		if got := envValue(pr.env, "GOMAXPROCS"); got != "1" {
			t.Errorf("got GOMAXPROCS=%q; want 1", got)
		}
		if n := strings.Count(strings.Join(pr.env, "\n"), "WORKER_ID="); n != 1 {
			t.Errorf("got %d WORKER_ID entries; want 1 (the balancer's own must be dropped)", n)
		}
	}

	// Crash worker 1 three times in a row: each restart keeps its id and
	// waits at least the backoff delay, which grows.
	pr := first["1"]
	wantDelays := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond}
	for i, want := range wantDelays {
		crashed := time.Now()
		pr.die(exitStatus{Code: 1})
		next := <-st.started
		if waited := time.Since(crashed); waited < want {
			t.Errorf("restart %d came after %v; want at least %v", i+1, waited, want)
		}
		if got := envValue(next.env, "WORKER_ID"); got != "1" {
			t.Errorf("restart %d got WORKER_ID=%q; want 1", i+1, got)
		}
		if envValue(next.env, "PORT") == "" {
			t.Errorf("restart %d has no PORT", i+1)
		}
		pr = next
	}
	w := p.Get(1)
	waitFor(t, func() bool { return w.State() == pool.Up && w.Pid() == pr.pid })
	if got := w.Restarts(); got != 3 {
		t.Errorf("got %d restarts; want 3", got)
	}
	if got := p.Get(2).Restarts(); got != 0 {
		t.Errorf("worker 2 got %d restarts; want 0", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Workers() {
		if w.State() != pool.Stopped || w.Pid() != 0 {
			t.Errorf("worker %d: got state %v pid %d; want stopped with no pid", w.ID(), w.State(), w.Pid())
		}
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	st := &fakeStarter{started: make(chan *fakeProc, 4), termExit: false}
	s, _ := newTestSupervisor(st, Backoff{Initial: time.Millisecond, Factor: 1, Max: time.Millisecond, Reset: time.Hour}, 30*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, 1) }()
	pr := <-st.started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := pr.sent(), []syscall.Signal{syscall.SIGCONT, syscall.SIGTERM, syscall.SIGKILL}; !slices.Equal(got, want) {
		t.Errorf("got signals %v; want %v", got, want)
	}
}

func TestNoRestartAfterStop(t *testing.T) {
	st := &fakeStarter{started: make(chan *fakeProc, 4), termExit: true}
	s, _ := newTestSupervisor(st, Backoff{Initial: time.Millisecond, Factor: 1, Max: time.Millisecond, Reset: time.Hour}, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, 1) }()
	<-st.started
	cancel()
	<-done
	time.Sleep(20 * time.Millisecond)
	n := st.count()
	if n != 1 {
		t.Errorf("got %d starts; want 1: a stopped worker must not be restarted", n)
	}
}

func keys(m map[string]*fakeProc) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
