package pool

import (
	"math/rand/v2"
	"sync/atomic"
)

// Selector picks the worker for a request. Select returns nil when no
// worker in the list is available. It is called concurrently, must not
// block, and should not allocate.
type Selector interface {
	Select(workers []*Worker) *Worker
	Name() string
}

// NewSelector returns the policy with the given name, or nil if the name
// is unknown.
func NewSelector(name string) Selector {
	switch name {
	case "round-robin":
		return new(RoundRobin)
	case "least-conn":
		return new(LeastConn)
	case "p2c":
		return new(P2C)
	}
	return nil
}

var (
	_ Selector = (*RoundRobin)(nil)
	_ Selector = (*LeastConn)(nil)
	_ Selector = (*P2C)(nil)
)

// RoundRobin hands requests to the available workers in turn. A worker
// that is not available is skipped, and its turn goes to the next one.
//
// A worker whose turn comes while it already holds more than its share of
// the requests in flight, a quarter more than the average over the
// available workers, is skipped too (the bound of consistent hashing with
// bounded loads, Mirrokni et al., with HAProxy's and brpc's factor of
// 1.25). Under an even load no worker is ever that far ahead and the turns
// are strict; but a worker that stalls (a single-threaded Node worker
// descheduled or collecting garbage, or one that hangs until the health
// check marks it down) stops answering while its turns keep coming, and
// without the bound every client connection soon waits on it.
type RoundRobin struct {
	next atomic.Uint64
}

// Name returns "round-robin".
func (*RoundRobin) Name() string { return "round-robin" }

// Select returns the next available worker in turn that is not over the
// bound; if every available worker is over it (in-flight counts moved
// while they were read), the next available worker in turn.
func (r *RoundRobin) Select(workers []*Worker) *Worker {
	var total, avail int64
	for _, w := range workers {
		if w.Available() {
			total += w.InFlight()
			avail++
		}
	}
	if avail == 0 {
		return nil
	}
	// A worker may take this request if it then holds at most
	// ceil(1.25 * (total+1) / avail), the request counted in the total;
	// the least busy worker always may.
	limit := (5*(total+1) + 4*avail - 1) / (4 * avail)
	n := uint64(len(workers))
	start := r.next.Add(1) - 1
	var first *Worker
	for i := range n {
		w := workers[(start+i)%n]
		if !w.Available() {
			continue
		}
		if w.InFlight() < limit {
			return w
		}
		if first == nil {
			first = w
		}
	}
	return first
}

// LeastConn picks the available worker with the fewest requests in
// flight; ties are broken at random so that idle workers share the load.
type LeastConn struct{}

// Name returns "least-conn".
func (*LeastConn) Name() string { return "least-conn" }

// Select returns the least busy available worker.
func (LeastConn) Select(workers []*Worker) *Worker {
	var best *Worker
	var bestN int64
	ties := 0
	for _, w := range workers {
		if !w.Available() {
			continue
		}
		n := w.InFlight()
		switch {
		case best == nil || n < bestN:
			best, bestN, ties = w, n, 1
		case n == bestN:
			// Reservoir sampling: each of the tied workers ends up
			// chosen with the same chance.
			ties++
			if rand.IntN(ties) == 0 {
				best = w
			}
		}
	}
	return best
}

// P2C is the power of two choices: it draws two different available
// workers at random and picks the one with fewer requests in flight. It
// spreads load nearly as well as LeastConn without reading every worker.
// The draws are distinct, as in Finagle's and Tower's p2c: drawn
// independently, both land on the same worker half the time with two
// workers, and that worker is then taken however busy it is.
type P2C struct{}

// Name returns "p2c".
func (*P2C) Name() string { return "p2c" }

// Select returns the less busy of two random available workers.
func (P2C) Select(workers []*Worker) *Worker {
	n := len(workers)
	if n == 0 {
		return nil
	}
	a := randomAvailable(workers, rand.IntN(n), nil)
	if a == nil || n == 1 {
		return a
	}
	b := randomAvailable(workers, rand.IntN(n), a)
	if b != nil && b.InFlight() < a.InFlight() {
		return b
	}
	return a
}

// randomAvailable returns the first available worker other than not from
// index start on, wrapping around.
func randomAvailable(workers []*Worker, start int, not *Worker) *Worker {
	n := len(workers)
	for i := range n {
		if w := workers[(start+i)%n]; w != not && w.Available() {
			return w
		}
	}
	return nil
}
