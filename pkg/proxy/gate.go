package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// A new connection to a worker is opened only when the worker has
// accepted every one opened to it before: its listener's accept queue is
// empty. A process that accepts only between pieces of work (Node, since
// libuv 1.45, takes one connection per turn of its event loop, and a
// busy turn serves a request of every connection it has) would
// otherwise find a burst of new connections in its queue, each one
// accepted a turn after the one before, the last after about n²/2
// requests; the requests written to them waited that long, past any
// client's timeout (docs/bench/tuning.md). Held back, a request takes
// instead one of the worker's connections as it comes back free, in the
// order the requests were held back, or a new one opened once the worker
// took the last: at most a turn or two.
// A worker that accepts at once (Go's net/http, Fiber) is never held
// back; the cost is one look at the queue per dial.
//
// The look is the kernel's own count (sock_diag, as `ss -lt` shows it),
// since a client sees nothing when its connection is accepted. Where
// there is no such count, dials are not held back, nor to an address
// that is not a loopback IP (an upstream elsewhere, or named by a host
// name), whose listener this host cannot see.

// gateMaxWait bounds how long a dial is held back by a worker that takes
// no connection: once the dial has waited that long and no look has found
// the worker's queue empty for as long, the connection is opened anyway,
// as before there was a gate. A worker that accepts, however slowly,
// keeps its dials waiting their turn: a burst of requests waiting for
// the slot must not all go at once when their first 5 s are up.
const gateMaxWait = 5 * time.Second

// gateEpoch is the origin of dialGate.empty, on the monotonic clock.
var gateEpoch = time.Now()

// errDownBeforeDial ends a dial held back for a worker that was marked
// down meanwhile: the request never reached it, so it may go to another
// worker whatever its method.
var errDownBeforeDial = fmt.Errorf("%w before a connection to it was opened", pool.ErrWorkerDown)

// errHeldTooLong ends a dial held back for longer than upstream_timeout:
// the worker took no new connection, and gave none of its own back, in
// the time the request may wait for it. A timeout, as a worker that
// never answers: 504, not retried.
var errHeldTooLong = fmt.Errorf("worker took no new connection within upstream_timeout: %w", context.DeadlineExceeded)

// A dialGate is one worker's: it lets one dial at a time look at the
// worker's accept queue and connect, so that two dials cannot both find
// the queue empty; and it hands a connection that comes back free to the
// request held back longest, so that one held back is not passed over by
// requests that came later and found the connection free first (as
// net/http's Transport hands a connection to the oldest of its waiters).
type dialGate struct {
	slot  chan struct{} // held by the dial that looks, until it connected
	empty atomic.Int64  // when a look last found the queue empty, since gateEpoch

	mu      sync.Mutex
	waiters []*waiter // held back, oldest first
}

// A waiter is a request held back by a gate, to which give hands the
// connection (an engine's own value) that comes back free.
type waiter struct {
	from any      // want.from
	got  chan any // buffered: give never blocks
}

// A want is what a request held back by a gate can take instead of a
// new connection: one of the worker's connections, free or coming back.
type want struct {
	from any        // whose connections: an *h1, a *fastWorker; give hands each only its own
	take func() any // a free one, or nil; called under the gate's lock
	back func(any)  // gives back one handed over as the wait ended otherwise
}

// dialGates holds the gate of each worker's address (netip.AddrPort to
// *dialGate). A restarted worker gets a new port, so the map keeps a gate
// per address a worker ever had: a small struct, at most one per port.
var dialGates sync.Map

// gateFor returns the gate of the worker at ap.
func gateFor(ap netip.AddrPort) *dialGate {
	if g, ok := dialGates.Load(ap); ok {
		return g.(*dialGate)
	}
	g, _ := dialGates.LoadOrStore(ap, &dialGate{slot: make(chan struct{}, 1)})
	return g.(*dialGate)
}

// give hands v, a connection of from's to g's worker that came back
// free, to the request held back longest for one of from's, and reports
// whether there was one. If there was none, keep, if not nil, is called
// before any request can be held back: it makes v free for the next
// request (puts it in the idle list).
func (g *dialGate) give(from, v any, keep func()) bool {
	g.mu.Lock()
	for i, w := range g.waiters {
		if w.from != from {
			continue // another engine's, over the same worker
		}
		if i == 0 {
			g.waiters[0] = nil
			g.waiters = g.waiters[1:]
		} else {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
		}
		g.mu.Unlock()
		w.got <- v
		return true
	}
	if keep != nil {
		keep()
	}
	g.mu.Unlock()
	return false
}

// join returns what wt.take finds free, or else a waiter queued for
// the next of wt.from's connections that comes back free: take runs
// under g's lock, so a connection given meanwhile is either found by it
// or handed to the waiter.
func (g *dialGate) join(wt *want) (any, *waiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v := wt.take(); v != nil {
		return v, nil
	}
	w := &waiter{from: wt.from, got: make(chan any, 1)}
	g.waiters = append(g.waiters, w)
	return nil, w
}

// quit takes w out of g's queue, and returns what was handed to it
// meanwhile, if anything.
func (g *dialGate) quit(w *waiter) any {
	g.mu.Lock()
	for i, x := range g.waiters {
		if x == w {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			g.mu.Unlock()
			return nil
		}
	}
	g.mu.Unlock()
	return <-w.got // give took it out of the queue: its value is there
}

// upKey is the context key under which the Transport's dial finds the
// worker's UpContext (Process.UpContext).
type upKey struct{}

// diagBroken is set once the kernel cannot say how many connections a
// listener has waiting (acceptQueue): dials then go at once.
var diagBroken atomic.Bool

func goOn() {}

// enter waits until a connection to the worker at ap may be opened,
// and returns the function to call once it is (dialed or failed). The
// dial goes at once when the kernel keeps no count (acceptQueue's ok is
// false), when the worker's queue is full (the connect would time out,
// which marks the worker down: better than waiting for it), and when the
// worker took no connection for gateMaxWait (rearm).
//
// wt, if not nil, makes the request one that can take a connection to
// the worker another way: what wt.take finds free, else the first of
// wt.from's that comes back free (give) once the requests held back
// before it have theirs. enter then returns that as got, and no leave.
// wt.back gives got back, to the next request or to the idle list, if
// it came as the wait ended otherwise. The wait ends with
// errDownBeforeDial when stop ends (the worker was marked down; nil:
// never), with ctx's cause when ctx ends, and with errHeldTooLong once
// it has lasted limit (upstream_timeout; 0: no bound).
func (g *dialGate) enter(ctx, stop context.Context, ap netip.AddrPort, wt *want, limit time.Duration) (leave func(), got any, err error) {
	if !ap.IsValid() || diagBroken.Load() {
		return goOn, nil, nil
	}
	var w *waiter
	if wt != nil {
		if got, w = g.join(wt); got != nil {
			return nil, got, nil
		}
	}
	leave, got, err = g.wait(ctx, stop, ap, w, limit)
	if w == nil || got != nil {
		return leave, got, err
	}
	if got = g.quit(w); got != nil {
		// A connection came as the wait ended.
		if err != nil {
			wt.back(got)
			return nil, nil, err
		}
		leave()
		return nil, got, nil
	}
	return leave, nil, err
}

// wait is enter's wait, for a connection handed to w (nil: none) or the
// gate's leave to dial.
func (g *dialGate) wait(ctx, stop context.Context, ap netip.AddrPort, w *waiter, limit time.Duration) (leave func(), got any, err error) {
	var stopped <-chan struct{}
	if stop != nil {
		stopped = stop.Done()
		if stop.Err() != nil {
			return nil, nil, errDownBeforeDial
		}
	}
	var handed <-chan any
	if w != nil {
		handed = w.got
	}
	start := time.Now()
	deadline := time.NewTimer(gateMaxWait)
	defer deadline.Stop()
	var expired <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		expired = t.C
	}
	var poll *time.Timer
	looking := false
	leave = func() { <-g.slot }
	for wait := 50 * time.Microsecond; ; wait = nextLook(wait, time.Since(start)) {
		if !looking {
			// Another dial looks: wait for it to be done, or for a
			// connection handed over.
			select {
			case g.slot <- struct{}{}:
				looking = true
			case got = <-handed:
				return nil, got, nil
			case <-stopped:
				return nil, nil, errDownBeforeDial
			case <-deadline.C:
				if g.rearm(deadline, start) {
					continue
				}
				return goOn, nil, nil
			case <-expired:
				return nil, nil, errHeldTooLong
			case <-ctx.Done():
				return nil, nil, context.Cause(ctx)
			}
		}
		n, limit, ok := acceptQueue(ap)
		if ok && n == 0 {
			g.empty.Store(int64(time.Since(gateEpoch)))
			return leave, nil, nil
		}
		if !ok || n > limit { // the kernel's sk_acceptq_is_full
			leave()
			return goOn, nil, nil
		}
		if poll == nil {
			poll = time.NewTimer(wait)
			defer poll.Stop()
		} else {
			poll.Reset(wait)
		}
		select {
		case <-poll.C:
			continue
		case got = <-handed:
			leave()
			return nil, got, nil
		case <-stopped:
			err = errDownBeforeDial
		case <-deadline.C:
			if g.rearm(deadline, start) {
				continue
			}
			leave()
			return goOn, nil, nil
		case <-expired:
			err = errHeldTooLong
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		leave()
		return nil, nil, err
	}
}

// rearm sets deadline, which fired, to when a dial held back since start
// must stop waiting: gateMaxWait after start, or after a look last found
// the worker's queue empty, whichever is later. It reports false, and
// sets nothing, when that is past.
func (g *dialGate) rearm(deadline *time.Timer, start time.Time) bool {
	last := gateEpoch.Add(time.Duration(g.empty.Load()))
	if last.Before(start) {
		last = start
	}
	d := time.Until(last.Add(gateMaxWait))
	if d <= 0 {
		return false
	}
	deadline.Reset(d)
	return true
}

// nextLook returns the time until the next look at a worker's accept
// queue, the last having come after prev, the dial held back for waited
// so far: from 50 µs, doubling up to 2 ms, then a tenth of waited,
// up to 50 ms. A worker that accepts at once is seen at once; one that
// accepts once per turn of a long event loop (a Node process with 32
// connections of 40 ms requests turns once a second) is looked at a few
// dozen times a turn, not hundreds, and its dial goes at most 2 ms or a
// tenth of its wait later than it could.
func nextLook(prev, waited time.Duration) time.Duration {
	return min(2*prev, max(2*time.Millisecond, min(waited/10, 50*time.Millisecond)))
}

// gateAddr returns the address whose listener the gate looks at for a
// worker at addr, host:port; the zero AddrPort, which the gate lets
// through, if the host is not a loopback IP.
func gateAddr(addr string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		return netip.AddrPort{}
	}
	return ap
}

// dialWorker opens a connection to the worker at addr once its gate
// lets it, having waited at most limit (0: no bound).
func dialWorker(ctx, stop context.Context, d *net.Dialer, addr string, limit time.Duration) (net.Conn, error) {
	ap := gateAddr(addr)
	leave, _, err := gateFor(ap).enter(ctx, stop, ap, nil, limit)
	if err != nil {
		return nil, err
	}
	defer leave()
	return d.DialContext(ctx, "tcp", addr)
}
