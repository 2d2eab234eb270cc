package supervisor

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// slowPass passes after a short delay, so many workers turn up at about
// the same time.
type slowPass struct{ d time.Duration }

func (c slowPass) Check(ctx context.Context, _ string) error {
	select {
	case <-time.After(c.d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStopWithManyWorkers stops 200 workers as they come up. The loop
// waits in stopMonitor for each monitor goroutine to end, while monitors
// report their workers up through the events channel (64 places): a
// monitor blocked on a full channel must give up, or the two wait for
// each other and Run never returns.
func TestStopWithManyWorkers(t *testing.T) {
	for i := range 5 {
		st := &fakeStarter{started: make(chan *fakeProc, 512), termExit: true}
		p := pool.New(new(pool.RoundRobin))
		s := newSupervisor(Spec{
			Argv: []string{"worker"}, Env: []string{"HOME=/"}, Grace: time.Second,
			Backoff: Backoff{Initial: 10 * time.Millisecond, Factor: 1, Max: 10 * time.Millisecond},
			Check:   slowPass{2 * time.Millisecond},
			Health:  health.Options{Interval: time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1, StartInterval: time.Millisecond},
		}, p, st)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, 200) }()
		time.Sleep(time.Duration(i) * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<22)
			dump := string(buf[:runtime.Stack(buf, true)])
			t.Logf("goroutines in stopMonitor: %d, blocked in send: %d", strings.Count(dump, "(*Supervisor).stopMonitor"), strings.Count(dump, "(*Supervisor).send("))
			for _, g := range strings.Split(dump, "\n\n") {
				if strings.Contains(g, "(*Supervisor).stopMonitor") {
					t.Log(g)
					break
				}
			}
			t.Fatalf("iteration %d: Run did not return 5s after cancel (200 workers)", i)
		}
	}
}

// TestControlDuringStopStartsNothing: a control operation that reaches
// the loop while it stops the workers (a SIGTTIN or SIGHUP queued just
// before SIGTERM) gets ErrStopped and starts nothing; before, it started
// processes that the stop never signalled, and Run never returned.
func TestControlDuringStopStartsNothing(t *testing.T) {
	st := &fakeStarter{started: make(chan *fakeProc, 64)} // the worker ignores SIGTERM
	s, _ := newTestSupervisor(st, Backoff{Initial: 10 * time.Millisecond, Factor: 1, Max: 10 * time.Millisecond}, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, 1) }()
	pr := <-st.started
	cancel()
	waitFor(t, func() bool { return len(pr.sent()) > 0 }) // the stop has begun
	for range 5 {
		// A context of its own, not cancelled: the stop alone must refuse.
		if err := s.ScaleBy(context.Background(), +1); !errors.Is(err, ErrStopped) {
			t.Errorf("ScaleBy during the stop: got %v; want ErrStopped", err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		st.mu.Lock()
		for _, p := range st.procs {
			p.die(exitStatus{Code: -1})
		}
		st.mu.Unlock()
		<-done
		t.Fatal("Run did not return 5 s after its context ended")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.procs) != 1 {
		t.Errorf("%d processes started; want 1 (none during the stop)", len(st.procs))
	}
}

// TestHurryKillsAtOnce: a second stop signal (Hurry) kills the workers
// that ignore SIGTERM instead of waiting out their grace period, here an
// hour.
func TestHurryKillsAtOnce(t *testing.T) {
	st := &fakeStarter{started: make(chan *fakeProc, 4)} // the worker ignores SIGTERM
	s, _ := newTestSupervisor(st, Backoff{Initial: time.Minute, Factor: 1, Max: time.Minute}, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, 1) }()
	pr := <-st.started
	cancel()
	waitFor(t, func() bool { return len(pr.sent()) >= 2 }) // SIGCONT, SIGTERM: the stop has begun
	s.Hurry()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		pr.die(exitStatus{Code: -1})
		<-done
		t.Fatal("Run still waited for the grace period after Hurry")
	}
	if got := pr.sent(); !slices.Contains(got, syscall.SIGKILL) {
		t.Errorf("got signals %v; want a SIGKILL", got)
	}
}
