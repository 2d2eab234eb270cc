package pool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestPlacesFirstComeFirstServed: with a bound of one request at a
// worker, the requests past it wait, and go in the order they came as
// places free; one whose client leaves, or whose wait runs out, leaves
// nothing counted.
func TestPlacesFirstComeFirstServed(t *testing.T) {
	p := New(new(RoundRobin))
	p.SetMaxInFlight(1)
	w := NewWorker(1)
	w.SetProcess(NewProcess(100, "127.0.0.1:1", time.Now()), Up)
	p.Add(w)
	ctx := context.Background()

	first, err := w.BeginWait(ctx, time.Second)
	if first == nil || err != nil {
		t.Fatalf("first: got %v, %v; want a process at once", first, err)
	}
	order := make(chan int, 3)
	for i := 1; i <= 3; i++ {
		go func() {
			proc, err := w.BeginWait(ctx, 10*time.Second)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			time.Sleep(20 * time.Millisecond)
			w.End(proc, true, false)
		}()
		// Each waiter queued before the next starts.
		for deadline := time.Now().Add(2 * time.Second); w.InFlight() != int64(i+1) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // from the count to the wait

	}
	select {
	case i := <-order:
		t.Fatalf("waiter %d went while the only place was taken", i)
	case <-time.After(50 * time.Millisecond):
	}
	w.End(first, true, false)
	for want := 1; want <= 3; want++ {
		select {
		case got := <-order:
			if got != want {
				t.Errorf("got waiter %d; want %d (first come, first served)", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("waiter %d never went", want)
		}
	}

	// The place is taken again: a client that leaves, and a wait that
	// runs out, give back their count.
	held, _ := w.BeginWait(ctx, time.Second)
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if proc, err := w.BeginWait(cctx, 10*time.Second); proc != nil || !errors.Is(err, context.Canceled) {
		t.Errorf("client gone: got %v, %v; want nil, context.Canceled", proc, err)
	}
	if proc, err := w.BeginWait(ctx, 30*time.Millisecond); proc != nil || !errors.Is(err, ErrQueueTimeout) {
		t.Errorf("wait past its time: got %v, %v; want nil, ErrQueueTimeout", proc, err)
	}
	if w.InFlight() != 1 {
		t.Errorf("in flight %d; want 1 (only the one holding the place)", w.InFlight())
	}
	w.End(held, true, false)
	if proc, err := w.BeginWait(ctx, time.Second); proc == nil || err != nil {
		t.Errorf("after the place freed: got %v, %v; want a process at once", proc, err)
	}
}

// TestTurnGoesToTheWorkersProcessNow: a request that waited for its place
// goes to the process the worker has when its turn comes (a reload
// replaced the one it came for), or, when the worker is down by then,
// back to the caller to pick another worker, with nothing left counted.
func TestTurnGoesToTheWorkersProcessNow(t *testing.T) {
	for _, then := range []string{"replaced", "down"} {
		t.Run(then, func(t *testing.T) {
			p := New(new(RoundRobin))
			p.SetMaxInFlight(1)
			w := NewWorker(1)
			old := NewProcess(100, "127.0.0.1:1", time.Now())
			w.SetProcess(old, Up)
			p.Add(w)
			ctx := context.Background()
			held, _ := w.BeginWait(ctx, time.Second)
			type result struct {
				proc *Process
				err  error
			}
			got := make(chan result, 1)
			go func() {
				proc, err := w.BeginWait(ctx, 10*time.Second)
				got <- result{proc, err}
			}()
			for deadline := time.Now().Add(2 * time.Second); w.InFlight() != 2 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond) // from the count to the wait
			fresh := NewProcess(101, "127.0.0.1:2", time.Now())
			if then == "replaced" {
				w.SetProcess(fresh, Up)
			} else {
				w.SetState(Down)
			}
			w.End(held, true, false)
			var r result
			select {
			case r = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter never went")
			}
			if r.err != nil {
				t.Fatalf("got error %v; want none", r.err)
			}
			if then == "replaced" {
				if r.proc != fresh {
					t.Fatalf("got the process of pid %d; want 101, the one that replaced the old", r.proc.Pid())
				}
				if old.InFlight() != 0 || fresh.InFlight() != 1 || w.InFlight() != 1 {
					t.Errorf("in flight: old %d, new %d, worker %d; want 0 1 1", old.InFlight(), fresh.InFlight(), w.InFlight())
				}
				w.End(r.proc, true, false)
			} else if r.proc != nil {
				t.Fatalf("got the process of pid %d; want none for a worker that is down", r.proc.Pid())
			}
			if old.InFlight() != 0 || fresh.InFlight() != 0 || w.InFlight() != 0 {
				t.Errorf("after: in flight old %d, new %d, worker %d; want 0", old.InFlight(), fresh.InFlight(), w.InFlight())
			}
			if len(w.places) != 0 {
				t.Errorf("%d places still taken; want 0", len(w.places))
			}
		})
	}
}
