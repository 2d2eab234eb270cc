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

// RoundRobin hands requests to the available workers in turn; a worker
// that is not available has no turn.
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
	// The turns go over the available workers only: counted over all
	// of them, a worker that is down would hand each of its turns to
	// the one after it, which would get twice the others' share.
	start := turnStart(workers, (r.next.Add(1)-1)%uint64(avail))
	n := uint64(len(workers))
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

// turnStart returns the index in workers of the available worker whose
// turn it is, the turn-th of them counted from 0: where a pick's scan
// begins.
func turnStart(workers []*Worker, turn uint64) uint64 {
	for i, w := range workers {
		if w.Available() {
			if turn == 0 {
				return uint64(i)
			}
			turn--
		}
	}
	return 0
}

// LeastConn picks the available worker with the fewest requests in
// flight. Ties go to the workers in turn, as nginx's least_conn and
// HAProxy's leastconn break them: each pick takes the next turn over the
// available workers, as RoundRobin does, scans from that worker on, and
// keeps the first of the least busy, so that idle workers share a light
// load evenly, two requests in a row go to two workers, and picks made
// at once start from different workers.
type LeastConn struct {
	next atomic.Uint64
}

// Name returns "least-conn".
func (*LeastConn) Name() string { return "least-conn" }

// Select returns the least busy available worker, the first of them
// from this pick's turn.
func (l *LeastConn) Select(workers []*Worker) *Worker {
	var avail uint64
	for _, w := range workers {
		if w.Available() {
			avail++
		}
	}
	if avail == 0 {
		return nil
	}
	start := turnStart(workers, (l.next.Add(1)-1)%avail) // over the available workers, as RoundRobin's
	n := uint64(len(workers))
	var best *Worker
	var bestN int64
	for i := range n {
		w := workers[(start+i)%n]
		if !w.Available() {
			continue
		}
		if k := w.InFlight(); best == nil || k < bestN {
			best, bestN = w, k
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
	avail := 0
	for _, w := range workers {
		if w.Available() {
			avail++
		}
	}
	if avail <= 1 {
		return nthAvailable(workers, 0, nil)
	}
	// Drawn among the available workers only: a random index among all
	// of them, moved on to the next available one, would draw the worker
	// after one that is down twice as often.
	a := nthAvailable(workers, rand.IntN(avail), nil)
	b := nthAvailable(workers, rand.IntN(avail-1), a)
	switch {
	case a == nil: // states changed between the count and the draws
		return nthAvailable(workers, 0, nil)
	case b != nil && b.InFlight() < a.InFlight():
		return b
	}
	return a
}

// nthAvailable returns the k-th (from 0) available worker other than
// not, or nil if there are not that many.
func nthAvailable(workers []*Worker, k int, not *Worker) *Worker {
	for _, w := range workers {
		if w == not || !w.Available() {
			continue
		}
		if k == 0 {
			return w
		}
		k--
	}
	return nil
}
