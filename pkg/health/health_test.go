package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCounter(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		results    []bool
		want       []Verdict
	}{
		{"rise 1 fall 2", 1, 2, []bool{true, false, false, true}, []Verdict{Pass, Hold, Fail, Pass}},
		{"rise 2 needs two passes", 2, 1, []bool{true, true, false, true, true}, []Verdict{Hold, Pass, Fail, Hold, Pass}},
		{"a pass resets the failures", 1, 3, []bool{false, false, true, false, false, false}, []Verdict{Hold, Hold, Pass, Hold, Hold, Fail}},
		{"failures go on failing", 1, 1, []bool{false, false}, []Verdict{Fail, Fail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Counter{Rise: tt.rise, Fall: tt.fall}
			for i, ok := range tt.results {
				if got := c.Observe(ok); got != tt.want[i] {
					t.Errorf("result %d (%v): got %v; want %v", i, ok, got, tt.want[i])
				}
			}
		})
	}
}

// waitState polls until w is in state s or the deadline passes.
func waitState(t *testing.T, w *pool.Worker, s pool.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.State() != s {
		if time.Now().After(deadline) {
			t.Fatalf("worker state %v; want %v", w.State(), s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMonitorHTTP(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			t.Errorf("got path %q; want %q", r.URL.Path, "/health")
		}
		hits.Add(1)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	var downs atomic.Int32
	w := runMonitor(t, pool.Starting, addr, NewHTTP("/health"), Options{
		Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2,
		OnDown: func(*pool.Worker) { downs.Add(1) },
	})

	waitState(t, w, pool.Up)
	status.Store(500)
	waitState(t, w, pool.Down)
	if got := downs.Load(); got != 1 {
		t.Errorf("got %d OnDown calls; want 1", got)
	}
	status.Store(204)
	waitState(t, w, pool.Up)
	if hits.Load() < 3 {
		t.Errorf("got %d checks; want at least 3", hits.Load())
	}
}

func TestMonitorStartingIgnoresRefusals(t *testing.T) {
	// Reserve a port, then close it: checks are refused until a listener
	// takes the port again, and the worker must stay starting, not down.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(1, addr, time.Now()), pool.Starting)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		Monitor(ctx, w, addr, TCP{}, Options{Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1, StartInterval: 5 * time.Millisecond})
	})
	defer func() { cancel(); wg.Wait() }()

	time.Sleep(50 * time.Millisecond)
	if got := w.State(); got != pool.Starting {
		t.Fatalf("got state %v while nothing listens; want starting", got)
	}
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	defer l2.Close()
	waitState(t, w, pool.Up)
}

func TestMonitorLeavesSupervisorStateAlone(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(1, addr, time.Now()), pool.Stopped)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		Monitor(ctx, w, addr, NewHTTP("/"), Options{Interval: 5 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1})
	})
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	if got := w.State(); got != pool.Stopped {
		t.Errorf("got state %v; want stopped: a passing check must not revive a stopped worker", got)
	}
}

// gatedCheck passes its first check once open is closed, and then waits
// for ctx to end: a worker whose check was under way as its process died.
type gatedCheck struct {
	open  chan struct{}
	calls atomic.Int64
}

func (g *gatedCheck) Check(ctx context.Context, addr string) error {
	if g.calls.Add(1) == 1 {
		<-g.open
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestCheckUnderWayWhenMarkedDownCountsNot: a check that passed but was
// under way while the proxy marked the worker down (a refused connection,
// its process dying) does not bring it back up: its answer may be from
// before the fall.
func TestCheckUnderWayWhenMarkedDownCountsNot(t *testing.T) {
	g := &gatedCheck{open: make(chan struct{})}
	w := runMonitor(t, pool.Up, "127.0.0.1:9", g, Options{Interval: 5 * time.Millisecond, Timeout: time.Minute, Rise: 1, Fall: 2, StartInterval: time.Millisecond})
	for g.calls.Load() == 0 {
		time.Sleep(time.Millisecond) // the first check is under way
	}
	w.CompareAndSwapState(pool.Up, pool.Down) // as the proxy does on a refusal
	close(g.open)
	for g.calls.Load() < 2 {
		time.Sleep(time.Millisecond) // the first check is counted, or not, and the next under way
	}
	if got := w.State(); got != pool.Down {
		t.Errorf("got state %v; want down: a check from before the fall brought it up", got)
	}
}

// TestBusyWorkerIsNotDown: checks that time out while the worker keeps
// answering requests do not take it down; once it stops answering, they
// do.
func TestBusyWorkerIsNotDown(t *testing.T) {
	slow := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-slow:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(1, addr, time.Now()), pool.Up)
	var answered atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		Monitor(ctx, w, addr, NewHTTP("/health"), Options{
			Interval: 10 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 1, Fall: 2,
			Progress: answered.Load,
		})
	})
	defer func() { close(slow); cancel(); wg.Wait() }()
	// Busy: every check times out, but requests keep being answered.
	busy := make(chan struct{})
	var answering sync.WaitGroup
	answering.Go(func() {
		for {
			select {
			case <-busy:
				return
			case <-time.After(time.Millisecond):
				answered.Add(1)
			}
		}
	})
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if w.State() != pool.Up {
			t.Fatalf("got %v while the worker kept answering; want up", w.State())
		}
	}
	// Hung: no more answers.
	close(busy)
	answering.Wait()
	waitState(t, w, pool.Down)
}

// TestBusyWorkerSaying503IsDown: a worker that answers its health check
// with a failure is down, however many requests it answers meanwhile:
// only a check that timed out is excused by the worker's progress.
func TestBusyWorkerSaying503IsDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	var answered atomic.Int64
	w := runMonitor(t, pool.Up, addr, NewHTTP("/health"), Options{
		Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2,
		Progress: func() int64 { return answered.Add(1) }, // always progressing
	})
	waitState(t, w, pool.Down)
}

// TestPing: the OPTIONS * check passes on any answer (paths of a -cmd
// worker are not known) and fails on a port whose process does not
// answer, though the kernel accepts its connections, as for a stopped or
// stuck worker, where a TCP connect passes.
func TestPing(t *testing.T) {
	var got atomic.Pointer[string]
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := r.Method + " " + r.RequestURI
		got.Store(&line)
		w.WriteHeader(http.StatusNotImplemented)
	}))
	srv.Config.DisableGeneralOptionsHandler = true // net/http would answer OPTIONS * itself
	srv.Start()
	defer srv.Close()
	ping := NewHTTP(Ping)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping.Check(ctx, srv.Listener.Addr().String()); err != nil {
		t.Errorf("a worker answering 501: got %v; want a pass", err)
	}
	if p := got.Load(); p == nil || *p != "OPTIONS *" {
		t.Errorf("the worker got %v; want OPTIONS *", p)
	}

	// A listener nobody accepts from: the kernel completes the handshake.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	addr := mute.Addr().String()
	if err := (TCP{}).Check(ctx, addr); err != nil {
		t.Fatalf("tcp check of the mute port: %v; want a pass (this is what it cannot see)", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := ping.Check(short, addr); err == nil {
		t.Error("a port that never answers: got a pass; want a failure")
	}
}

// runMonitor runs Monitor on a worker in state at addr until the test
// ends, and returns the worker.
func runMonitor(t *testing.T, state pool.State, addr string, check Checker, o Options) *pool.Worker {
	t.Helper()
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(1, addr, time.Now()), state)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { Monitor(ctx, w, addr, check, o) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

// TestBusyWorkerDroppingChecksIsNotDown: a busy worker may drop the
// check's connection (a Node worker at its maxConnections does) rather
// than let it time out; while it answers requests that is no hang.
func TestBusyWorkerDroppingChecksIsNotDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := l.Addr().String()
	var answered, progressing atomic.Int64
	progressing.Store(1)
	w := runMonitor(t, pool.Up, addr, NewHTTP(Ping), Options{
		Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2,
		Progress: func() int64 { return answered.Add(progressing.Load()) },
	})
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if w.State() != pool.Up {
			t.Fatalf("got %v while the worker kept answering; want up", w.State())
		}
	}
	progressing.Store(0) // hung: no more answers
	waitState(t, w, pool.Down)
}

// failingCheck fails every check with err, and counts them.
type failingCheck struct {
	err   error
	calls atomic.Int64
}

func (f *failingCheck) Check(context.Context, string) error {
	f.calls.Add(1)
	return f.err
}

// TestCheckTheBalancerCouldNotMakeCountsNot: a check that failed because
// the balancer could not open its socket (out of descriptors) says
// nothing of the worker, which stays up; a check the worker failed takes
// it down.
func TestCheckTheBalancerCouldNotMakeCountsNot(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want pool.State
	}{
		{"out of descriptors", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, pool.Up},
		{"out of local ports", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, pool.Up},
		{"reset by the worker", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, pool.Down},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &failingCheck{err: tt.err}
			var downs atomic.Int64
			w := runMonitor(t, pool.Up, "127.0.0.1:9", f, Options{Interval: time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 2,
				OnDown: func(*pool.Worker) { downs.Add(1) }})
			for deadline := time.Now().Add(10 * time.Second); f.calls.Load() < 5; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d checks in 10 s; want 5", f.calls.Load())
				}
			}
			if got := w.State(); got != tt.want {
				t.Errorf("got state %v after %d checks failing with %v; want %v", got, f.calls.Load(), tt.err, tt.want)
			}
			if tt.want == pool.Up && downs.Load() != 0 {
				t.Errorf("OnDown called %d times; want none: the worker would be replaced", downs.Load())
			}
		})
	}
}
