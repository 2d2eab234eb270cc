package pool

import (
	"context"
	"testing"
	"time"
)

// oneWorker returns a pool of one local worker, in state s.
func oneWorker(s State) (*Pool, *Worker) {
	p := New(new(RoundRobin))
	w := NewWorker(1)
	p.Add(w)
	w.SetProcess(NewProcess(100, "127.0.0.1:1", time.Now()), s)
	return p, w
}

// waiting checks that no pick came on got within 50 ms: it waits.
func waiting(t *testing.T, got <-chan *Worker) {
	t.Helper()
	select {
	case g := <-got:
		t.Fatalf("picked %v; want a wait", g)
	case <-time.After(50 * time.Millisecond):
	}
}

// picked returns the pick that comes on got, and fails the test if none
// comes within 10 s (after, what ended the wait).
func picked(t *testing.T, got <-chan *Worker, after string) *Worker {
	t.Helper()
	select {
	case g := <-got:
		return g
	case <-time.After(10 * time.Second):
		t.Fatalf("still waiting 10 s after %s", after)
		return nil
	}
}

// TestPickWait: with no worker available, a pick waits for one of the
// balancer's own that is on its way up, and returns it once it is up;
// it gives up as soon as none is coming, and at once when none was.
func TestPickWait(t *testing.T) {
	tests := []struct {
		name   string
		remote bool
		failed bool          // the slot's last process left before it was up
		state  State         // the worker's state when the pick comes
		change func(*Worker) // what happens while it waits; nil: nothing
		wait   time.Duration
		want   bool // a worker picked
	}{
		{"starting, then up", false, false, Starting, func(w *Worker) { w.SetState(Up) }, time.Minute, true},
		{"down, restarted with a new process", false, false, Down, func(w *Worker) {
			w.SetProcess(NewProcess(200, "127.0.0.1:2", time.Now()), Starting)
			w.CompareAndSwapState(Starting, Up)
		}, time.Minute, true},
		{"down, then in backoff", false, false, Down, func(w *Worker) { w.ClearProcess(Backoff) }, time.Minute, false},
		{"starting, then stopped", false, false, Starting, func(w *Worker) { w.SetState(Stopped) }, time.Minute, false},
		{"down, restarted, and out before it was up", false, false, Down, func(w *Worker) {
			w.SetProcess(NewProcess(200, "127.0.0.1:2", time.Now()), Starting)
			w.ClearProcess(Down)
		}, time.Minute, false},
		{"starting until the wait runs out", false, false, Starting, nil, 50 * time.Millisecond, false},
		{"in backoff: no wait", false, false, Backoff, nil, time.Minute, false},
		{"restarting after a process that never came up: no wait", false, true, Starting, nil, time.Minute, false},
		{"a remote upstream down: no wait", true, false, Down, nil, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(new(RoundRobin))
			w := NewWorker(1)
			if tt.remote {
				w = NewRemoteWorker(1, "127.0.0.1:1")
			}
			p.Add(w)
			if tt.failed {
				w.SetProcess(NewProcess(99, "127.0.0.1:1", time.Now()), Starting)
				w.ClearProcess(Down)
			}
			w.SetProcess(NewProcess(100, "127.0.0.1:1", time.Now()), tt.state)
			got := make(chan *Worker, 1)
			go func() { got <- p.PickWait(context.Background(), tt.wait) }()
			if tt.change != nil {
				waiting(t, got)
				tt.change(w)
			}
			if g := picked(t, got, "the change"); (g != nil) != tt.want || (g != nil && g != w) {
				t.Errorf("got %v; want a worker: %v", g, tt.want)
			}
		})
	}
}

// TestPickWaitLeavesWithItsClient: a pick that waits ends when its
// context does.
func TestPickWaitLeavesWithItsClient(t *testing.T) {
	p, _ := oneWorker(Starting)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *Worker, 1)
	go func() { got <- p.PickWait(ctx, time.Minute) }()
	cancel()
	if g := picked(t, got, "its context ended"); g != nil {
		t.Errorf("got %v; want nil", g)
	}
}

// TestPickExceptWaitSkipsTried: a retry does not wait for the worker it
// failed on, coming back or not.
func TestPickExceptWaitSkipsTried(t *testing.T) {
	p, w := oneWorker(Down)
	got := make(chan *Worker, 1)
	go func() { got <- p.PickExceptWait(context.Background(), []*Worker{w}, time.Minute) }()
	if g := picked(t, got, "the pick, for the worker it tried"); g != nil {
		t.Errorf("got %v; want nil", g)
	}
}

// TestStopWaits: a pick waiting for a worker on its way up ends when the
// balancer stops, and none waits after.
func TestStopWaits(t *testing.T) {
	p, _ := oneWorker(Starting)
	got := make(chan *Worker, 2)
	go func() { got <- p.PickWait(context.Background(), time.Minute) }()
	waiting(t, got)
	if n := p.Waiting(); n != 1 {
		t.Errorf("Waiting: got %d; want 1", n)
	}
	p.StopWaits()
	go func() { got <- p.PickWait(context.Background(), time.Minute) }()
	for range 2 {
		if g := picked(t, got, "the stop"); g != nil {
			t.Errorf("got %v; want nil", g)
		}
	}
	if n := p.Waiting(); n != 0 {
		t.Errorf("Waiting after the stop: got %d; want 0", n)
	}
}
