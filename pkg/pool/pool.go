package pool

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MaxWorkers bounds the workers the balancer starts: their ids, the
// WORKER_IDs, are 1..MaxWorkers. Members it does not start (remote
// upstreams) take the ids above, so that a scale-up never meets one.
const MaxWorkers = 1024

// Pool is the set of workers the proxy balances over, with the policy that
// picks among them and the balancer-wide counters. The zero value is not
// usable; call New.
type Pool struct {
	selector Selector

	mu      sync.Mutex // serializes membership changes; readers use the snapshot
	workers atomic.Pointer[[]*Worker]

	requests atomic.Int64
	errors   atomic.Int64
	retries  atomic.Int64

	maxInFlight int // per worker, 0 for no bound; see SetMaxInFlight

	changes signal       // a member's state changed (PickWait)
	stopped atomic.Bool  // StopWaits was called
	waiting atomic.Int64 // requests in PickWait's wait now

	clients    atomic.Pointer[func() int64] // SetClients
	maxClients atomic.Int64
}

// SetClients makes open the count of client connections open now, and
// max their bound (the listener's, guard.Admit), for Clients to report.
func (p *Pool) SetClients(open func() int64, max int64) {
	p.clients.Store(&open)
	p.maxClients.Store(max)
}

// Clients reports the client connections open now and their bound, as
// SetClients gave them; 0 and 0 before it.
func (p *Pool) Clients() (open, max int64) {
	if f := p.clients.Load(); f != nil {
		open = (*f)()
	}
	return open, p.maxClients.Load()
}

// SetMaxInFlight bounds the requests at each worker at once to n (0, the
// default, sets no bound): past it, a request waits in the balancer for
// its turn (Worker.BeginWait) instead of opening one more connection to
// the worker. A single-threaded worker (Node) serves the connections it
// has served before a new one's first request, so a burst of new
// connections to a busy one waits for as long as the load lasts. Call it
// before adding workers.
func (p *Pool) SetMaxInFlight(n int) { p.maxInFlight = n }

// New returns an empty pool that picks workers with sel.
func New(sel Selector) *Pool {
	p := &Pool{selector: sel}
	p.workers.Store(&[]*Worker{})
	return p
}

// Workers returns the current members, ordered by id. The slice is shared:
// do not modify it.
func (p *Pool) Workers() []*Worker { return *p.workers.Load() }

// Get returns the worker with the given id, or nil.
func (p *Pool) Get(id int) *Worker {
	for _, w := range p.Workers() {
		if w.ID() == id {
			return w
		}
	}
	return nil
}

// Add makes w a member. A worker with the same id is replaced.
func (p *Pool) Add(w *Worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxInFlight > 0 && w.places == nil {
		w.places = make(chan struct{}, p.maxInFlight)
	}
	w.changes.Store(&p.changes)
	old := p.Workers()
	next := make([]*Worker, 0, len(old)+1)
	for _, o := range old {
		if o.ID() != w.ID() {
			next = append(next, o)
		}
	}
	next = append(next, w)
	slices.SortFunc(next, func(a, b *Worker) int { return a.ID() - b.ID() })
	p.workers.Store(&next)
}

// Remove drops the worker with the given id, if any.
func (p *Pool) Remove(id int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.Workers()
	next := make([]*Worker, 0, len(old))
	for _, o := range old {
		if o.ID() != id {
			next = append(next, o)
		}
	}
	p.workers.Store(&next)
}

// Pick returns a worker for a new request, or nil when none is available.
func (p *Pool) Pick() *Worker { return p.selector.Select(p.Workers()) }

// PickWait is Pick, except that when no worker is available and one of
// the balancer's own is on its way up (starting, or down until its
// restart), it waits for a worker to become available, until ctx ends or
// wait passes. A worker that dies alone, or all of them at once, then
// costs the requests that come meanwhile a wait, not a 503: what Node's
// cluster gets from the kernel, which holds new connections in the
// listener's queue while a worker restarts. It returns nil at once when
// no worker is coming, and as soon as none is any more: in backoff,
// stopped, remote (an upstream that is down may stay so), or restarting
// after a process that never came up (a crash loop, a command that
// fails: its clients get a 503 at once rather than a wait for nothing).
func (p *Pool) PickWait(ctx context.Context, wait time.Duration) *Worker {
	return p.pickWait(ctx, wait, nil)
}

// PickExceptWait is PickExcept, waiting as PickWait does for a worker
// not in tried: the retry of a request whose worker died with the others.
func (p *Pool) PickExceptWait(ctx context.Context, tried []*Worker, wait time.Duration) *Worker {
	return p.pickWait(ctx, wait, tried)
}

func (p *Pool) pickWait(ctx context.Context, wait time.Duration, tried []*Worker) *Worker {
	pick := func() *Worker {
		if tried == nil {
			return p.Pick()
		}
		return p.PickExcept(tried)
	}
	if w := pick(); w != nil || !p.coming(tried) {
		return w
	}
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		changed := p.changes.wait() // before the look, so no change is missed
		if w := pick(); w != nil || !p.coming(tried) {
			return w
		}
		select {
		case <-changed:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// Waiting counts the requests waiting now for a worker on its way up
// (PickWait, PickExceptWait): none while a worker is available.
func (p *Pool) Waiting() int64 { return p.waiting.Load() }

// StopWaits ends the waits of PickWait and PickExceptWait, now and to
// come, with no worker: the balancer is stopping, and the workers on
// their way up will be stopped, not used, so the requests waiting for
// them get their 503 instead of holding the stop up.
func (p *Pool) StopWaits() {
	p.stopped.Store(true)
	p.changes.fire()
}

// coming reports whether one of the balancer's own workers, not in
// tried, is starting, or down until its restart, after a process that
// came up (or none yet); never once StopWaits was called.
func (p *Pool) coming(tried []*Worker) bool {
	if p.stopped.Load() {
		return false
	}
	for _, w := range p.Workers() {
		if s := w.State(); !w.remote && (s == Starting || s == Down) && !w.failedStart.Load() && !slices.Contains(tried, w) {
			return true
		}
	}
	return false
}

// A signal wakes whoever waits for the next change: a channel closed at
// each change, made only when someone waits. Its methods are safe on a
// nil *signal (a worker in no pool).
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel that is closed at the next fire.
func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// fire wakes the waiters.
func (s *signal) fire() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

// PickExcept is Pick without the workers in tried: the next choice after
// a failed attempt. It allocates, so it is for the retry path only.
func (p *Pool) PickExcept(tried []*Worker) *Worker {
	all := p.Workers()
	rest := make([]*Worker, 0, len(all))
	for _, w := range all {
		if !slices.Contains(tried, w) {
			rest = append(rest, w)
		}
	}
	return p.selector.Select(rest)
}

// Policy names the pool's selection policy.
func (p *Pool) Policy() string { return p.selector.Name() }

// CountRequest counts one request answered by the balancer, with ok false
// when the answer was an error made by the balancer (502, 503, 504).
func (p *Pool) CountRequest(ok bool) {
	p.requests.Add(1)
	if !ok {
		p.errors.Add(1)
	}
}

// CountBroken counts as an error of the balancer's a request already
// counted answered (CountRequest(true)) whose answer then broke: its
// worker failed in the middle of the body, the header gone to the client.
func (p *Pool) CountBroken() { p.errors.Add(1) }

// CountRetry counts one retry of a request on another worker.
func (p *Pool) CountRetry() { p.retries.Add(1) }

// Requests counts the requests the balancer answered.
func (p *Pool) Requests() int64 { return p.requests.Load() }

// Errors counts the requests answered with an error of the balancer's.
func (p *Pool) Errors() int64 { return p.errors.Load() }

// Retries counts the retries on another worker.
func (p *Pool) Retries() int64 { return p.retries.Load() }
