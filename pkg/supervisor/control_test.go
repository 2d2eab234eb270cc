package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// switchCheck fails for the addresses in bad.
type switchCheck struct {
	mu   sync.Mutex
	bad  map[string]bool
	only map[string]bool // when not nil, only these ports pass
}

func (c *switchCheck) Check(_ context.Context, addr string) error {
	_, port, _ := cut(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad[port] || (c.only != nil && !c.only[port]) {
		return errors.New("no answer")
	}
	return nil
}

// passAll undoes only: every process passes again, but those of bad.
func (c *switchCheck) passAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.only = nil
}

// fail makes the checks of addr (or of a bare port) fail from now on.
func (c *switchCheck) fail(addr string) {
	if _, port, ok := cut(addr); ok {
		addr = port
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bad[addr] = true
}

// running starts a supervisor of n workers over fakes and returns it with
// its pool, starter and a stop function.
func running(t *testing.T, n int, mod func(*Spec)) (*Supervisor, *pool.Pool, *fakeStarter, *switchCheck, func()) {
	t.Helper()
	st := &fakeStarter{started: make(chan *fakeProc, 64), termExit: true}
	check := &switchCheck{bad: map[string]bool{}}
	spec := Spec{
		Argv:    []string{"worker"},
		Env:     []string{"HOME=/"},
		Grace:   time.Second,
		Backoff: Backoff{Initial: 5 * time.Millisecond, Factor: 1, Max: 50 * time.Millisecond, Reset: time.Hour},
		Check:   check,
		Health:  health.Options{Interval: 5 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2, StartInterval: time.Millisecond},
	}
	if mod != nil {
		mod(&spec)
	}
	p := pool.New(new(pool.RoundRobin))
	s := newSupervisor(spec, p, st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, n) }()
	waitFor(t, func() bool { return upCount(p) >= n })
	return s, p, st, check, func() { cancel(); <-done }
}

func upCount(p *pool.Pool) int {
	n := 0
	for _, w := range p.Workers() {
		if w.State() == pool.Up {
			n++
		}
	}
	return n
}

func pids(p *pool.Pool) map[int]int {
	out := map[int]int{}
	for _, w := range p.Workers() {
		out[w.ID()] = w.Pid()
	}
	return out
}

func TestReloadReplacesEveryWorkerOneAtATime(t *testing.T) {
	s, p, st, _, stop := running(t, 3, nil)
	defer stop()
	before := pids(p)
	if err := s.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := pids(p)
	for id, pid := range before {
		if after[id] == pid || after[id] == 0 {
			t.Errorf("worker %d: pid %d before, %d after; want a new one", id, pid, after[id])
		}
		if w := p.Get(id); w.State() != pool.Up || w.Restarts() != 1 {
			t.Errorf("worker %d: got %v with %d restarts; want up with 1", id, w.State(), w.Restarts())
		}
	}
	// Every old process was told to stop, and was never without a
	// successor: at any time at least n-0 workers were up, checked by
	// the state staying up above and the pool never losing a member.
	st.mu.Lock()
	old := st.procs[:3]
	st.mu.Unlock()
	for _, pr := range old {
		waitFor(t, func() bool { return len(pr.sent()) > 0 })
	}
}

func TestReloadDrainsInFlightFirst(t *testing.T) {
	s, p, st, _, stop := running(t, 1, nil)
	defer stop()
	w := p.Get(1)
	old := st.procs[0]
	held := w.Begin() // a request in flight on the old process
	done := make(chan error)
	go func() { done <- s.Reload(context.Background()) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if sent := old.sent(); len(sent) != 0 {
		t.Fatalf("old process got %v while a request was in flight; want nothing yet", sent)
	}
	if w.Pid() == old.pid {
		t.Fatal("traffic did not move to the replacement")
	}
	w.End(held, true, false)
	waitFor(t, func() bool { return len(old.sent()) > 0 })
}

// TestReloadStopsAHungDrainingWorker: an old process that hangs while it
// drains (its checks fail, it finishes nothing) is stopped after Fall
// checks, not at DrainTimeout, so that its requests fail over.
func TestReloadStopsAHungDrainingWorker(t *testing.T) {
	s, p, st, check, stop := running(t, 1, func(sp *Spec) { sp.DrainTimeout = time.Minute })
	defer stop()
	w := p.Get(1)
	old := st.procs[0]
	held := w.Begin() // a request stuck in the old process
	defer w.End(held, false, false)
	up := held.UpContext() // as the proxy watches it
	oldAddr := w.Process().Addr()
	if err := s.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sent := old.sent(); len(sent) != 0 {
		t.Fatalf("old process got %v at once; want the drain to wait", sent)
	}
	check.fail(oldAddr) // it hangs now
	waitFor(t, func() bool { return len(old.sent()) > 0 })
	select {
	case <-up.Done():
	default:
		t.Error("the hung process's up context did not end: its stuck requests would wait for it to die")
	}
}

func TestReplacementThatNeverComesUpKeepsTheOld(t *testing.T) {
	s, p, _, check, stop := running(t, 1, func(sp *Spec) { sp.StartTimeout = 50 * time.Millisecond })
	defer stop()
	old := p.Get(1).Pid()
	// Every process started from now on fails its checks.
	startsFailingChecks(check, p)
	err := s.RestartWorker(context.Background(), 1)
	if err == nil {
		t.Fatal("got nil; want an error for a replacement that never came up")
	}
	if got := p.Get(1).Pid(); got != old || p.Get(1).State() != pool.Up {
		t.Errorf("got pid %d state %v; want the old %d still up", got, p.Get(1).State(), old)
	}
}

func cut(addr string) (string, string, bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], true
		}
	}
	return addr, "", false
}

func TestScale(t *testing.T) {
	s, p, _, _, stop := running(t, 2, nil)
	defer stop()
	ctx := context.Background()
	if err := s.Scale(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if got := ids(p); !slices.Equal(got, []int{1, 2, 3, 4}) || upCount(p) != 4 {
		t.Errorf("after scale to 4: got ids %v, %d up; want [1 2 3 4] all up", got, upCount(p))
	}
	if err := s.ScaleBy(ctx, -3); err != nil {
		t.Fatal(err)
	}
	if got := ids(p); !slices.Equal(got, []int{1}) {
		t.Errorf("after removing 3: got ids %v; want [1]", got)
	}
	if err := s.ScaleBy(ctx, -5); err != nil {
		t.Fatal(err)
	}
	if got := ids(p); !slices.Equal(got, []int{1}) {
		t.Errorf("never fewer than one: got ids %v; want [1]", got)
	}
	if err := s.Scale(ctx, 0); !errors.Is(err, ErrBadCount) {
		t.Errorf("Scale(0): got %v; want ErrBadCount", err)
	}
	if err := s.RestartWorker(ctx, 9); !errors.Is(err, ErrNoSuchWorker) {
		t.Errorf("RestartWorker(9): got %v; want ErrNoSuchWorker", err)
	}
}

func TestHungWorkerIsReplaced(t *testing.T) {
	_, p, st, check, stop := running(t, 2, nil)
	defer stop()
	w := p.Get(1)
	hung := st.procs[0]
	if w.Pid() != hung.pid {
		hung = st.procs[1]
	}
	check.fail(w.Addr())
	waitFor(t, func() bool { return w.State() == pool.Up && w.Pid() != hung.pid })
	if sent := hung.sent(); len(sent) < 2 || sent[0].String() != "continued" {
		t.Errorf("hung process got %v; want SIGCONT then SIGTERM", sent)
	}
}

func TestCrashLoopGoesToBackoff(t *testing.T) {
	_, p, st, _, stop := running(t, 1, func(sp *Spec) {
		sp.MinUptime = time.Hour // every exit is unstable
		sp.MaxRestarts = 3
		sp.Backoff = Backoff{Initial: time.Millisecond, Factor: 1, Max: time.Hour, Reset: time.Hour}
	})
	defer stop()
	w := p.Get(1)
	for range 4 {
		pr := lastProc(st)
		pr.die(exitStatus{Code: 3})
		waitFor(t, func() bool { return lastProc(st) != pr || w.State() == pool.Backoff })
	}
	waitFor(t, func() bool { return w.State() == pool.Backoff })
	if got := w.Restarts(); got != 3 {
		t.Errorf("got %d restarts; want 3 before backoff holds the worker", got)
	}
}

func TestMaxRequestsRecycles(t *testing.T) {
	_, p, st, _, stop := running(t, 1, func(sp *Spec) { sp.MaxRequests = 5 })
	defer stop()
	w := p.Get(1)
	first := w.Pid()
	for range 5 {
		w.End(w.Begin(), true, false)
	}
	waitFor(t, func() bool { return w.Pid() != first && w.State() == pool.Up })
	waitFor(t, func() bool { return len(st.procs[0].sent()) > 0 })
}

func lastProc(st *fakeStarter) *fakeProc {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.procs[len(st.procs)-1]
}

func ids(p *pool.Pool) []int {
	var out []int
	for _, w := range p.Workers() {
		out = append(out, w.ID())
	}
	return out
}

// TestScaleFillsFreedIDs: WORKER_IDs stay 1..N. A scale-up while a
// removed worker is still stopping (its caller gave up waiting) is
// refused as busy; once the worker is gone, the next scale-up takes its
// id again, not one past the highest ever used.
func TestScaleFillsFreedIDs(t *testing.T) {
	s, p, st, _, stop := running(t, 2, nil)
	defer stop()
	st.mu.Lock()
	second := st.procs[1]
	st.mu.Unlock()
	second.termExit = false // worker 2 takes its time to stop
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Scale(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Scale(1) with worker 2 still stopping: got %v; want the context's deadline", err)
	}
	if err := s.Scale(context.Background(), 2); !errors.Is(err, ErrBusy) {
		t.Fatalf("Scale(2) with worker 2 still stopping: got %v; want ErrBusy", err)
	}
	second.die(exitStatus{Code: 0})
	waitFor(t, func() bool { return !slices.Contains(ids(p), 2) })
	var err error
	waitFor(t, func() bool {
		err = s.Scale(context.Background(), 3)
		return !errors.Is(err, ErrBusy)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := ids(p)
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("got ids %v; want [1 2 3]", got)
	}
}

// TestScaleBesideRemoteUpstreams: an upstream the balancer does not start
// never takes a WORKER_ID, so a scale-up beside one still gives the new
// worker the next id of 1..N, and the upstream keeps its own.
func TestScaleBesideRemoteUpstreams(t *testing.T) {
	s, p, st, _, stop := running(t, 2, func(sp *Spec) { sp.Remote = []string{"127.0.0.1:1"} })
	defer stop()
	// Run adds the upstream after the local slots, which running waits
	// for: the upstream may come a moment later.
	var remote int
	for deadline := time.Now().Add(2 * time.Second); remote == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, w := range p.Workers() {
			if w.Remote() {
				remote = w.ID()
			}
		}
	}
	if remote <= pool.MaxWorkers {
		t.Errorf("the upstream's id is %d; want one above %d, outside any worker count", remote, pool.MaxWorkers)
	}
	if err := s.ScaleBy(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if got := envValue(lastProc(st).env, "WORKER_ID"); got != "3" {
		t.Errorf("the third worker beside an upstream got WORKER_ID %s; want 3", got)
	}
	if w := p.Get(remote); w == nil || !w.Remote() {
		t.Errorf("the upstream's id %d no longer names it: %v", remote, ids(p))
	}
	// Listed in /stats under its id, but started by none: a restart of
	// it says so, not only "no such worker".
	if err := s.RestartWorker(context.Background(), remote); !errors.Is(err, ErrNoSuchWorker) || !strings.Contains(err.Error(), "upstream") {
		t.Errorf("RestartWorker(%d): got %v; want ErrNoSuchWorker naming the upstream", remote, err)
	}
}

// TestScaleBounded: a worker count past pool.MaxWorkers is refused
// before any process starts (POST /scale?workers=100000 is a typo).
func TestScaleBounded(t *testing.T) {
	s, _, st, _, stop := running(t, 1, nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Scale(ctx, pool.MaxWorkers+1); !errors.Is(err, ErrBadCount) {
		t.Errorf("Scale(%d): got %v; want ErrBadCount", pool.MaxWorkers+1, err)
	}
	n := st.count()
	if n != 1 {
		t.Errorf("%d processes started; want 1", n)
	}
}

// TestNeverUpGoesToBackoff: a worker whose processes never come up (they
// run, but never answer a check, and start_timeout stops each) is a
// crash loop however long each waited: its backoff grows and it ends in
// the backoff state. Counted from its start, each process had "lived"
// past restart_backoff_reset and min_uptime, and the worker restarted
// every start_timeout for ever.
func TestNeverUpGoesToBackoff(t *testing.T) {
	_, p, st, check, stop := running(t, 1, func(sp *Spec) {
		sp.StartTimeout = 30 * time.Millisecond
		sp.MinUptime = 10 * time.Millisecond
		sp.MaxRestarts = 2
		sp.Backoff = Backoff{Initial: time.Millisecond, Factor: 2, Max: time.Hour, Reset: 10 * time.Millisecond}
	})
	quit := make(chan struct{})
	go func() { // the starter's channel must not fill if it loops
		for {
			select {
			case <-st.started:
			case <-quit:
				return
			}
		}
	}()
	defer close(quit)
	defer stop()
	check.mu.Lock()
	check.only = map[string]bool{} // from now on no process passes
	check.mu.Unlock()
	lastProc(st).die(exitStatus{Code: 1})
	w := p.Get(1)
	deadline := time.Now().Add(3 * time.Second)
	for w.State() != pool.Backoff && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if w.State() != pool.Backoff {
		st.mu.Lock()
		n := len(st.procs)
		st.mu.Unlock()
		t.Errorf("after %d processes that never came up the worker is %v; want backoff", n, w.State())
	}
}

// TestLateUpOfATerminatingProcess: a process being stopped (here a
// replacement that start_timeout gave up on, still in its grace period)
// whose "up" was already on its way must not take the worker over: the
// worker would point at a process about to die, and the reload would
// report success. The "up" is delivered by hand, as the loop would run
// it when the monitor queued it before the stop.
func TestLateUpOfATerminatingProcess(t *testing.T) {
	s, p, st, check, stop := running(t, 1, func(sp *Spec) {
		sp.StartTimeout = 50 * time.Millisecond
		sp.Grace = time.Hour
	})
	defer stop()
	old := p.Get(1).Pid()
	startsFailingChecks(check, p) // the replacement never passes
	st.mu.Lock()
	st.termExit = false // and lingers once sent SIGTERM
	st.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.RestartWorker(context.Background(), 1) }()
	var late bool
	waitFor(t, func() bool {
		s.call(context.Background(), func() {
			sl := s.slots[1]
			if pr := sl.next; pr != nil && pr.terminating {
				s.up(sl, pr)
				late = true
			}
		})
		return late
	})
	lastProc(st).die(exitStatus{Code: 0}) // its grace would run for an hour
	if err := <-done; err == nil {
		t.Error("the restart reported success; want the replacement's failure")
	}
	if got := p.Get(1).Pid(); got != old || p.Get(1).State() != pool.Up {
		t.Errorf("worker 1: pid %d, %v; want the old process %d, up", got, p.Get(1).State(), old)
	}
}

// portOf returns the PORT a fake process was started with.
func portOf(pr *fakeProc) string { return envValue(pr.env, "PORT") }

// startsFailingChecks makes every process started from now on fail its
// checks (the one serving slot 1 keeps passing).
func startsFailingChecks(check *switchCheck, p *pool.Pool) {
	_, port, _ := cut(p.Get(1).Addr())
	check.mu.Lock()
	check.only = map[string]bool{port: true}
	check.mu.Unlock()
}

// TestFailedRecycleWaitsItsBackoff: a recycle whose replacement dies
// before it is up is not tried again at every check, but after the
// backoff delay, as a crash's restart is.
func TestFailedRecycleWaitsItsBackoff(t *testing.T) {
	_, p, st, check, stop := running(t, 1, func(sp *Spec) {
		sp.MaxRequests = 1
		sp.StartTimeout = time.Minute
		sp.Backoff = Backoff{Initial: 3 * time.Second, Factor: 1, Max: 3 * time.Second, Reset: time.Hour}
	})
	defer stop()
	first := lastProc(st)
	<-st.started // the first process's start
	startsFailingChecks(check, p)
	quit := make(chan struct{})
	defer close(quit)
	go func() { // every replacement dies at once
		for {
			select {
			case pr := <-st.started:
				pr.die(exitStatus{Code: 1})
			case <-quit:
				return
			}
		}
	}()
	w := p.Get(1)
	w.End(w.Begin(), true, false) // past max_requests: recycled
	waitFor(t, func() bool { return lastProc(st) != first && lastProc(st).dead.Load() })
	// The recycle check runs every 100 ms: without the backoff it would
	// start a replacement at each one.
	time.Sleep(800 * time.Millisecond)
	n := st.count()
	if n != 2 {
		t.Errorf("got %d processes started; want 2 (the worker and one failed replacement) within the backoff delay", n)
	}
	if w.Pid() != first.pid || w.State() != pool.Up {
		t.Errorf("got pid %d state %v; want the first process %d still serving", w.Pid(), w.State(), first.pid)
	}
}

// startRecycle runs one worker that max_requests (1) recycles, serves it
// a request, and returns once the replacement has started (its checks
// fail until the test says otherwise, so it stays starting): the first
// process and its replacement beside what running returns.
func startRecycle(t *testing.T) (*Supervisor, *pool.Pool, *fakeStarter, *switchCheck, func(), *fakeProc, *fakeProc) {
	t.Helper()
	s, p, st, check, stop := running(t, 1, func(sp *Spec) {
		sp.MaxRequests = 1
		sp.StartTimeout = time.Minute
	})
	first := lastProc(st)
	startsFailingChecks(check, p)
	w := p.Get(1)
	w.End(w.Begin(), true, false) // past max_requests: a recycle starts
	waitFor(t, func() bool { return lastProc(st) != first })
	return s, p, st, check, stop, first, lastProc(st)
}

// TestReloadReplacesAReplacementWithOldSettings: a reload that finds a
// replacement already starting (a recycle's), started with the settings
// from before the reload, stops it and starts one with the new settings,
// instead of counting it as reloaded.
func TestReloadReplacesAReplacementWithOldSettings(t *testing.T) {
	s, p, st, check, stop, _, stale := startRecycle(t)
	defer stop()
	w := p.Get(1)
	check.fail(portOf(stale)) // it stays starting
	check.passAll()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.Configure(ctx, release2(check)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	cur := lastProc(st)
	if w.Pid() != cur.pid || cur == stale {
		t.Fatalf("worker runs pid %d; want a process started by the reload (the last started, %d), not %d", w.Pid(), cur.pid, stale.pid)
	}
	if got := envValue(cur.env, "RELEASE"); got != "2" {
		t.Errorf("the worker's process has RELEASE=%q; want the reload's 2", got)
	}
	waitFor(t, func() bool { return len(stale.sent()) > 0 })
}

// TestRestartWaitsForAReplacementOnItsWay: restarting a worker whose
// process died while its replacement was starting waits for that
// replacement instead of starting a second process for the slot.
func TestRestartWaitsForAReplacementOnItsWay(t *testing.T) {
	s, p, st, check, stop, first, next := startRecycle(t)
	defer stop()
	w := p.Get(1)
	first.die(exitStatus{Code: 1})
	waitFor(t, func() bool { return w.Pid() == 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.RestartWorker(ctx, 1) }()
	time.Sleep(50 * time.Millisecond) // the restart is asked for before the replacement is up
	check.passAll()
	if err := <-done; err != nil {
		t.Fatalf("restart: %v", err)
	}
	if w.Pid() != next.pid || w.State() != pool.Up {
		t.Errorf("got pid %d state %v; want the replacement %d up", w.Pid(), w.State(), next.pid)
	}
	n := st.count()
	if n != 2 {
		t.Errorf("got %d processes started; want 2 (no second one for the slot)", n)
	}
}

// TestScaleUpTellsAStartFailure: a new worker that cannot be started at
// all (no such program) fails the scale at once, instead of leaving it
// waiting for an up that never comes.
// The log says "scaled up" only once the new workers are up.
func TestScaleUpTellsAStartFailure(t *testing.T) {
	var logs testutil.SyncBuffer
	s, _, st, _, stop := running(t, 1, func(sp *Spec) { sp.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	defer stop()
	st.fail.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := s.Scale(ctx, 2)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want the start's failure", err)
	}
	if !strings.Contains(err.Error(), "no such file") {
		t.Errorf("got %v; want it to say why the start failed", err)
	}
	if strings.Contains(logs.String(), "scaled up") {
		t.Errorf("a scale-up that failed was logged as done:\n%s", logs.String())
	}
	st.fail.Store(false)
	if err := s.Scale(ctx, 3); err != nil { // worker 2 stays, restarting
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "scaled up") {
		t.Errorf("a scale-up that succeeded was not logged as done:\n%s", logs.String())
	}
}

// TestAbandonedScaleDownStaysUnderWay: a scale-down whose caller gave up
// while a removed worker drains stays the operation under way until the
// worker has stopped, so that a scale-up meanwhile cannot give the new
// worker an id past the one still draining: WORKER_ID stays 1..N.
func TestAbandonedScaleDownStaysUnderWay(t *testing.T) {
	s, p, _, _, stop := running(t, 3, func(sp *Spec) { sp.DrainTimeout = time.Minute })
	defer stop()
	third := p.Get(3)
	held := third.Begin() // worker 3 drains until this request ends
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Scale(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("scale down: got %v; want the caller's deadline while worker 3 drains", err)
	}
	if err := s.Scale(context.Background(), 3); !errors.Is(err, ErrBusy) {
		t.Fatalf("scale up while worker 3 drains: got %v; want ErrBusy", err)
	}
	third.End(held, true, false)
	waitFor(t, func() bool { return p.Get(3) == nil })
	var err error
	waitFor(t, func() bool {
		err = s.Scale(context.Background(), 3)
		return !errors.Is(err, ErrBusy)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(p); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("got ids %v; want [1 2 3]", got)
	}
}

// TestRevertAfterAFailedReload: a reload whose settings start worker 1's
// replacement but not worker 2's fails there; Revert puts the settings
// from before it back on worker 1, leaves workers 2 and 3 (which never
// changed) as they were, and later starts use the old settings too.
func TestRevertAfterAFailedReload(t *testing.T) {
	s, p, st, check, stop := running(t, 3, nil)
	defer stop()
	before := pids(p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failedReload(ctx, t, s, st, check, 2)
	replaced := p.Get(1).Pid()
	if replaced == before[1] || envValue(procOf(t, st, replaced).env, "RELEASE") != "2" {
		t.Fatalf("worker 1 runs pid %d (was %d); want the reload's replacement before worker 2 failed", replaced, before[1])
	}

	if err := s.Revert(ctx, 0); err != nil {
		t.Fatalf("revert: %v", err)
	}
	after := pids(p)
	if after[1] == replaced || envValue(procOf(t, st, after[1]).env, "RELEASE") != "" {
		t.Errorf("worker 1 runs pid %d with RELEASE=%q; want a new process without the failed reload's settings",
			after[1], envValue(procOf(t, st, after[1]).env, "RELEASE"))
	}
	for _, id := range []int{2, 3} {
		if after[id] != before[id] {
			t.Errorf("worker %d runs pid %d; want %d, untouched by the reload and its revert", id, after[id], before[id])
		}
	}
	if n := upCount(p); n != 3 {
		t.Errorf("%d workers up; want 3", n)
	}
	waitFor(t, func() bool { return len(procOf(t, st, replaced).sent()) > 0 })

	// A crash's restart takes the settings put back, not the failed ones.
	procOf(t, st, after[3]).die(exitStatus{Code: 1})
	waitFor(t, func() bool { return p.Get(3).Pid() != after[3] && p.Get(3).State() == pool.Up })
	if got := envValue(procOf(t, st, p.Get(3).Pid()).env, "RELEASE"); got != "" {
		t.Errorf("worker 3 restarted with RELEASE=%q; want the settings before the reload", got)
	}
}

// procOf returns the fake process with pid, and fails the test if st
// started none.
func procOf(t *testing.T, st *fakeStarter, pid int) *fakeProc {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, p := range st.procs {
		if p.pid == pid {
			return p
		}
	}
	t.Fatalf("no process with pid %d was started", pid)
	return nil
}

// TestRevertRestartsASlotLeftEmpty: a worker whose process died while
// its replacement with the new settings was starting has only that
// replacement to come back with. Revert stops it and starts the worker
// again at once with the settings put back, even when replacing another
// worker fails first. (Revert left it to its replacement loop, which the
// failure ended: the worker stayed down with no process and no restart.)
func TestRevertRestartsASlotLeftEmpty(t *testing.T) {
	s, p, st, check, stop := running(t, 2, func(sp *Spec) { sp.StartTimeout = time.Minute })
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Configure(ctx, release2(check)); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartWorker(ctx, 1); err != nil {
		t.Fatalf("restart of worker 1 with the new settings: %v", err)
	}
	// Processes started from now on fail their checks, so worker 2's
	// replacement stays starting.
	check.mu.Lock()
	check.only = map[string]bool{}
	for _, id := range []int{1, 2} {
		_, port, _ := cut(p.Get(id).Addr())
		check.only[port] = true
	}
	check.mu.Unlock()
	old := procOf(t, st, p.Get(2).Pid())
	rctx, rcancel := context.WithCancel(ctx)
	restarted := make(chan error, 1)
	go func() { restarted <- s.RestartWorker(rctx, 2) }()
	waitFor(t, func() bool { return lastProc(st) != old && envValue(lastProc(st).env, "WORKER_ID") == "2" })
	next := lastProc(st)
	old.die(exitStatus{Code: 1})
	waitFor(t, func() bool { return p.Get(2).State() != pool.Up })
	rcancel()
	<-restarted

	// Putting the old settings back on worker 1 fails: its start is
	// refused.
	st.mu.Lock()
	st.refuse = func(id int, env []string) bool { return id == 1 && envValue(env, "RELEASE") == "" }
	st.mu.Unlock()
	check.fail(portOf(next))
	check.passAll()
	if err := s.Revert(ctx, 0); err == nil {
		t.Fatal("revert: got nil; want worker 1's refused start")
	}
	waitFor(t, func() bool {
		w := p.Get(2)
		return w.State() == pool.Up && envValue(procOf(t, st, w.Pid()).env, "RELEASE") == ""
	})
	waitFor(t, func() bool { return len(next.sent()) > 0 })
}

// release2 is the spec of running with RELEASE=2 added to the
// environment: the new settings of the reload tests, told apart in a
// process's env.
func release2(check *switchCheck) Spec {
	return Spec{
		Argv: []string{"worker"}, Env: []string{"HOME=/", "RELEASE=2"}, Grace: time.Second, StartTimeout: time.Minute,
		Backoff: Backoff{Initial: 5 * time.Millisecond, Factor: 1, Max: 50 * time.Millisecond, Reset: time.Hour},
		Check:   check,
		Health:  health.Options{Interval: 5 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2, StartInterval: time.Millisecond},
	}
}

// TestRevertGoesOnPastAWorkerItCannotPutBack: a revert that cannot start
// worker 1 with the old settings still puts them back on worker 2, and
// says which failed. (It stopped at worker 1, leaving worker 2 on the
// failed reload's settings.)
func TestRevertGoesOnPastAWorkerItCannotPutBack(t *testing.T) {
	s, p, st, check, stop := running(t, 3, nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failedReload(ctx, t, s, st, check, 3)
	st.mu.Lock()
	st.refuse = func(id int, env []string) bool { return id == 1 || id == 3 && envValue(env, "RELEASE") == "2" }
	st.mu.Unlock()
	err := s.Revert(ctx, 0)
	if err == nil || !strings.Contains(err.Error(), "revert worker 1") {
		t.Errorf("revert: got %v; want worker 1's failure", err)
	}
	for id, want := range map[int]string{1: "2", 2: ""} {
		if got := envValue(procOf(t, st, p.Get(id).Pid()).env, "RELEASE"); got != want {
			t.Errorf("worker %d runs with RELEASE=%q; want %q", id, got, want)
		}
	}
}

// TestRevertPutsTheSettingsBackBeforeRemovingWorkers: a reload that had
// raised the count from 2 to 3 is undone; worker 1, dying while the
// extra worker 3 drains, comes back with the settings put back, and is
// not replaced again afterwards. (The extra workers were removed before
// the settings went back, so a restart in that window took the failed
// reload's settings, and was replaced once more.)
func TestRevertPutsTheSettingsBackBeforeRemovingWorkers(t *testing.T) {
	s, p, st, check, stop := running(t, 2, func(sp *Spec) { sp.DrainTimeout = time.Minute })
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Configure(ctx, release2(check)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Scale(ctx, 3); err != nil {
		t.Fatal(err)
	}
	third := p.Get(3)
	held := third.Begin() // worker 3 drains until this request ends
	reverted := make(chan error, 1)
	go func() { reverted <- s.Revert(ctx, 2) }()
	waitFor(t, func() bool { n, err := s.Workers(ctx); return err == nil && n == 2 })

	victim := p.Get(1).Pid()
	procOf(t, st, victim).die(exitStatus{Code: 1})
	waitFor(t, func() bool { w := p.Get(1); return w.Pid() != victim && w.State() == pool.Up })
	restarted := p.Get(1).Pid()
	if got := envValue(procOf(t, st, restarted).env, "RELEASE"); got != "" {
		t.Errorf("worker 1 restarted while worker 3 drained with RELEASE=%q; want the settings put back", got)
	}
	third.End(held, true, false)
	if err := <-reverted; err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got := ids(p); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("got ids %v; want [1 2]", got)
	}
	if got := p.Get(1).Pid(); got != restarted {
		t.Errorf("worker 1 runs pid %d; want %d, its restart, not replaced again", got, restarted)
	}
	if got := envValue(procOf(t, st, p.Get(2).Pid()).env, "RELEASE"); got != "" {
		t.Errorf("worker 2 runs with RELEASE=%q; want the settings before the reload", got)
	}
}

// TestDrainGoesByTheSettingsTheProcessStartedWith: a worker started with
// a reload's settings, removed after those were undone, drains under the
// health check it was started with. (It was watched with the check put
// back, which did not fit it: taken for hung, it was stopped with its
// request still in flight instead of being let finish.)
func TestDrainGoesByTheSettingsTheProcessStartedWith(t *testing.T) {
	s, p, st, check, stop := running(t, 1, func(sp *Spec) { sp.DrainTimeout = time.Minute })
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec := release2(&switchCheck{bad: map[string]bool{}})
	spec.DrainTimeout = time.Minute
	if err := s.Configure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := s.Scale(ctx, 2); err != nil {
		t.Fatal(err)
	}
	second := p.Get(2)
	proc := procOf(t, st, second.Pid())
	check.fail(portOf(proc)) // the check put back does not fit worker 2's program
	held := second.Begin()
	reverted := make(chan error, 1)
	go func() { reverted <- s.Revert(ctx, 1) }()
	waitFor(t, func() bool { n, err := s.Workers(ctx); return err == nil && n == 1 })
	// Forty check intervals, where two failed checks would do.
	time.Sleep(200 * time.Millisecond)
	if sent := proc.sent(); len(sent) > 0 {
		t.Errorf("worker 2 sent %v while its request was in flight; want it left to drain", sent)
	}
	second.End(held, true, false)
	if err := <-reverted; err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got := ids(p); !slices.Equal(got, []int{1}) {
		t.Errorf("got ids %v; want [1]", got)
	}
}

// failedReload reloads s with release2's settings, which worker id
// cannot start with: the reload replaces the workers before it, then
// fails there.
func failedReload(ctx context.Context, t *testing.T, s *Supervisor, st *fakeStarter, check *switchCheck, id int) {
	t.Helper()
	st.mu.Lock()
	st.refuse = func(i int, env []string) bool { return i == id && envValue(env, "RELEASE") == "2" }
	st.mu.Unlock()
	if err := s.Configure(ctx, release2(check)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err == nil {
		t.Fatalf("reload: got nil; want worker %d's failure", id)
	}
}
