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
// instead the first of the worker's connections to come back idle, or a
// new one opened once the worker took the last: at most a turn or two.
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

// A dialGate is one worker's: it lets one dial at a time look at the
// worker's accept queue and connect, so that two dials cannot both find
// the queue empty; and it wakes a request held back when a connection to
// the worker comes back idle.
type dialGate struct {
	slot  chan struct{} // held by the dial that looks, until it connected
	idle  chan struct{} // a connection came back idle
	empty atomic.Int64  // when a look last found the queue empty, since gateEpoch
}

// dialGates holds the gate of each worker's address (netip.AddrPort to
// *dialGate). A restarted worker gets a new port, so the map keeps a gate
// per address a worker ever had: two small channels, at most one per
// port.
var dialGates sync.Map

// gateFor returns the gate of the worker at ap.
func gateFor(ap netip.AddrPort) *dialGate {
	if g, ok := dialGates.Load(ap); ok {
		return g.(*dialGate)
	}
	g, _ := dialGates.LoadOrStore(ap, &dialGate{slot: make(chan struct{}, 1), idle: make(chan struct{}, 1)})
	return g.(*dialGate)
}

// backIdle wakes a request held back by g, if one is: a connection to
// its worker came back idle.
func (g *dialGate) backIdle() {
	select {
	case g.idle <- struct{}{}:
	default:
	}
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
// worker took no connection for gateMaxWait (rearm). found, if not nil,
// is asked whether the caller has what it waited for another way (an
// idle connection came back): enter then returns nil, nil. The wait
// ends with errDownBeforeDial when stop ends (the worker was marked down;
// nil: never), and with ctx's cause when ctx ends.
func (g *dialGate) enter(ctx, stop context.Context, ap netip.AddrPort, found func() bool) (leave func(), err error) {
	if !ap.IsValid() || diagBroken.Load() {
		return goOn, nil
	}
	var stopped <-chan struct{}
	if stop != nil {
		stopped = stop.Done()
		if stop.Err() != nil {
			return nil, errDownBeforeDial
		}
	}
	// Only a request that can take an idle connection (found) takes the
	// wake-up meant for one.
	var idle <-chan struct{}
	if found != nil {
		idle = g.idle
	}
	start := time.Now()
	deadline := time.NewTimer(gateMaxWait)
	defer deadline.Stop()
	var poll *time.Timer
	looking := false
	leave = func() { <-g.slot }
	for wait := 50 * time.Microsecond; ; wait = nextLook(wait, time.Since(start)) {
		if found != nil && found() {
			if looking {
				leave()
			}
			return nil, nil
		}
		if !looking {
			// Another dial looks: wait for it to be done, or for an
			// idle connection.
			select {
			case g.slot <- struct{}{}:
				looking = true
			case <-idle:
				continue
			case <-stopped:
				return nil, errDownBeforeDial
			case <-deadline.C:
				if g.rearm(deadline, start) {
					continue
				}
				return goOn, nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		n, limit, ok := acceptQueue(ap)
		if ok && n == 0 {
			g.empty.Store(int64(time.Since(gateEpoch)))
			return leave, nil
		}
		if !ok || n > limit { // the kernel's sk_acceptq_is_full
			leave()
			return goOn, nil
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
		case <-idle:
			continue
		case <-stopped:
			err = errDownBeforeDial
		case <-deadline.C:
			if g.rearm(deadline, start) {
				continue
			}
			leave()
			return goOn, nil
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		leave()
		return nil, err
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
// lets it.
func dialWorker(ctx, stop context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	ap := gateAddr(addr)
	leave, err := gateFor(ap).enter(ctx, stop, ap, nil)
	if err != nil {
		return nil, err
	}
	defer leave()
	return d.DialContext(ctx, "tcp", addr)
}
