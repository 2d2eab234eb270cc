package proxy

import (
	"context"
	"net"
	"strconv"
	"time"
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
// there is no such count, dials are not held back.

// gateMaxWait bounds how long a dial is held back; past it the
// connection is opened anyway, as before there was a gate.
const gateMaxWait = 5 * time.Second

// A dialGate lets one dial at a time through to the workers whose ports
// share it, so that two dials cannot both find the queue empty; and wakes
// one of those held back when a connection to them comes back idle.
type dialGate struct {
	slot chan struct{}
	idle chan struct{}
}

var dialGates = func() (g [64]dialGate) {
	for i := range g {
		g[i].slot = make(chan struct{}, 1)
		g[i].idle = make(chan struct{}, 1)
	}
	return g
}()

// backIdle wakes a dial held back for the worker on port, if one is:
// a connection to it came back idle.
func backIdle(port int) {
	select {
	case dialGates[port%len(dialGates)].idle <- struct{}{}:
	default:
	}
}

// enterGate waits until a connection to the worker on port may be
// opened, and returns the function to call once it is (dialed or failed).
// It waits at most gateMaxWait, and stops waiting when stop ends (the
// worker went down, or nil: never). found, if not nil, is asked between
// looks whether the caller has what it waited for another way (an idle
// connection came back): enterGate then returns nil, nil. An error means
// ctx ended.
func enterGate(ctx, stop context.Context, port int, found func() bool) (leave func(), err error) {
	g := &dialGates[port%len(dialGates)]
	var stopped <-chan struct{}
	if stop != nil {
		stopped = stop.Done()
	}
	var timer *time.Timer
	deadline := time.Now().Add(gateMaxWait)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 2*time.Millisecond) {
		if found != nil && found() {
			return nil, nil
		}
		select {
		case g.slot <- struct{}{}:
			n, ok := acceptQueue(port)
			if !ok || n == 0 || !time.Now().Before(deadline) {
				return func() { <-g.slot }, nil
			}
			<-g.slot
		default: // another dial is under way
		}
		select {
		case <-stopped:
			select {
			case g.slot <- struct{}{}:
				return func() { <-g.slot }, nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		default:
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-g.idle:
		case <-stopped:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// port returns the port of a worker's address, host:port; 0 if it has
// none (a dial to it fails anyway).
func port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// dialWorker opens a connection to the worker at addr once enterGate
// lets it.
func dialWorker(ctx, stop context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	leave, err := enterGate(ctx, stop, port(addr), nil)
	if err != nil {
		return nil, err
	}
	defer leave()
	return d.DialContext(ctx, "tcp", addr)
}
