package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// State is where a worker is in its life.
type State int32

const (
	// Starting: the process was spawned and has not passed a health
	// check yet. It gets no requests.
	Starting State = iota
	// Up: the worker passed its health check and gets requests.
	Up
	// Down: the process exited or failed its health checks; it gets no
	// requests until it is restarted or passes again.
	Down
	// Backoff: the worker crashed repeatedly and waits out a long delay
	// before its next restart.
	Backoff
	// Stopped: the balancer stopped the worker for good.
	Stopped
)

var stateNames = [...]string{"starting", "up", "down", "backoff", "stopped"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int32(s))
	}
	return stateNames[s]
}

// MarshalText writes the state's name, as /stats shows it.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Process is one running process of a worker slot: where it listens, and
// the requests it carries. A slot gets a new Process at every start, so
// requests that began on the old one are counted, and drained, on it.
type Process struct {
	addr    string
	pid     int
	started time.Time
	up      atomic.Pointer[upEpoch] // armed while the worker is up on this process
	wasUp   atomic.Bool             // the worker was up on this process once

	inFlight atomic.Int64
	requests atomic.Int64
	cpu      atomic.Uint64 // math.Float64bits of the CPU percentage
	rss      atomic.Uint64
}

// NewProcess describes a process with the given pid, listening on addr.
func NewProcess(pid int, addr string, started time.Time) *Process {
	return &Process{addr: addr, pid: pid, started: started}
}

// upEpoch is one stretch of time a process is up, with a context that
// ends when it goes down.
type upEpoch struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// ErrWorkerDown is the cause of UpContext's end: the worker was marked
// down (failed health checks, refused a connection, or its process
// exited) while requests were still on their way to it.
var ErrWorkerDown = errors.New("worker went down")

// ErrWorkerGone is UpContext's cause when the worker takes no more
// connections (one was refused: it closed its listener) or its process
// exited. It wraps ErrWorkerDown. The worker's open connections are not
// to be cut then: the kernel ends them itself as the process exits, and
// what the worker sent on them first is still there to read (an answer,
// then its exit, as /dead does; or the last answers of a graceful stop).
// Only a worker that hangs, with its process and its connections open,
// needs them cut.
var ErrWorkerGone = fmt.Errorf("%w: it takes no more connections", ErrWorkerDown)

// Gone reports whether up, an UpContext that ended, ended because its
// worker is gone (ErrWorkerGone) rather than hung: whether its busy
// connections are to be left to the kernel rather than cut.
func Gone(up context.Context) bool { return errors.Is(context.Cause(up), ErrWorkerGone) }

// UpContext returns a context that ends, with cause ErrWorkerDown (or
// ErrWorkerGone, which wraps it), when the worker serving on this
// process is marked down: a request waiting on
// a hung or cut-off worker can give up at once and go elsewhere, instead
// of waiting for its timeout. It never ends for a process that was not
// marked down, including one replaced by a reload (its requests finish).
func (p *Process) UpContext() context.Context {
	if e := p.up.Load(); e != nil {
		return e.ctx
	}
	return context.Background()
}

// arm starts a new up stretch, unless one is running.
func (p *Process) arm() {
	if p == nil || p.up.Load() != nil {
		return
	}
	p.wasUp.Store(true)
	ctx, cancel := context.WithCancelCause(context.Background())
	if !p.up.CompareAndSwap(nil, &upEpoch{ctx, cancel}) {
		cancel(nil)
	}
}

// MarkDown ends the process's up stretch, as marking its worker down
// would: the requests on their way to it give up (UpContext ends). For a
// process that no longer serves its worker's slot, a draining one found
// hung, whose worker's state belongs to the process that replaced it.
func (p *Process) MarkDown() { p.end(ErrWorkerDown) }

// MarkGone ends the process's up stretch with cause ErrWorkerGone: it
// refused a connection. Call it before marking the worker down, whose
// own end of the stretch then finds it ended.
func (p *Process) MarkGone() { p.end(ErrWorkerGone) }

// end ends the current up stretch, if any, with cause.
func (p *Process) end(cause error) {
	if p == nil {
		return
	}
	if e := p.up.Swap(nil); e != nil {
		e.cancel(cause)
	}
}

// Addr is where the process listens, "127.0.0.1:PORT".
func (p *Process) Addr() string { return p.addr }

// Pid is the process id.
func (p *Process) Pid() int { return p.pid }

// Started is when the process was spawned.
func (p *Process) Started() time.Time { return p.started }

// InFlight counts the requests being forwarded to this process now.
func (p *Process) InFlight() int64 { return p.inFlight.Load() }

// Requests counts the responses this process gave.
func (p *Process) Requests() int64 { return p.requests.Load() }

// Usage is the last sampled CPU percentage (100 = one core) and resident
// memory; zero before the first sample.
func (p *Process) Usage() (cpuPercent float64, rssBytes uint64) {
	return math.Float64frombits(p.cpu.Load()), p.rss.Load()
}

// SetUsage records a sample of CPU and memory.
func (p *Process) SetUsage(cpuPercent float64, rssBytes uint64) {
	p.cpu.Store(math.Float64bits(cpuPercent))
	p.rss.Store(rssBytes)
}

// Worker is one slot of the cluster: a stable id (WORKER_ID, 1..N) and the
// process currently filling it. Its fields are accessed atomically and it
// must not be copied.
type Worker struct {
	id     int
	remote bool

	proc  atomic.Pointer[Process] // nil when no process serves the slot
	state atomic.Int32

	requests atomic.Int64
	inFlight atomic.Int64
	errors   atomic.Int64
	retries  atomic.Int64
	restarts atomic.Int64

	latency Latency

	// places bounds the requests at the worker at once (Pool.SetMaxInFlight):
	// one token per request sent, nil for no bound.
	places chan struct{}

	// changes, set when the worker joins a pool, is told of each change
	// of its state (Pool.PickWait); nil outside a pool.
	changes atomic.Pointer[signal]
	// failedStart: the last process to leave the slot never came up, so
	// the next one may well not either.
	failedStart atomic.Bool
}

// NewWorker returns a worker with the given id, in state Starting, with no
// process.
func NewWorker(id int) *Worker { return &Worker{id: id} }

// NewRemoteWorker returns a worker for a backend the balancer does not
// start, at addr, in state Starting.
func NewRemoteWorker(id int, addr string) *Worker {
	w := &Worker{id: id, remote: true}
	w.proc.Store(NewProcess(0, addr, time.Now()))
	return w
}

// Remote reports whether the worker is a backend the balancer does not
// start (no pid, no CPU or memory).
func (w *Worker) Remote() bool { return w.remote }

// ID is the worker's stable id, 1..N.
func (w *Worker) ID() int { return w.id }

// Process is the process serving the slot, or nil.
func (w *Worker) Process() *Process { return w.proc.Load() }

// Addr is the current process's "127.0.0.1:PORT", or "" when none runs.
func (w *Worker) Addr() string {
	if p := w.proc.Load(); p != nil {
		return p.addr
	}
	return ""
}

// Pid is the current process id, 0 when no process runs.
func (w *Worker) Pid() int {
	if p := w.proc.Load(); p != nil {
		return p.pid
	}
	return 0
}

// State is the worker's current state.
func (w *Worker) State() State { return State(w.state.Load()) }

// Available reports whether the worker may get a new request.
func (w *Worker) Available() bool { return w.State() == Up }

// Uptime is how long the current process has been running, 0 if none.
func (w *Worker) Uptime(now time.Time) time.Duration {
	if p := w.proc.Load(); p != nil {
		return now.Sub(p.started)
	}
	return 0
}

// Requests counts the responses proxied from this worker id, over all its
// processes.
func (w *Worker) Requests() int64 { return w.requests.Load() }

// InFlight counts the requests being forwarded to this worker now.
func (w *Worker) InFlight() int64 { return w.inFlight.Load() }

// Errors counts the requests this worker failed: refused, reset, timed out.
func (w *Worker) Errors() int64 { return w.errors.Load() }

// Retries counts the requests that failed on this worker and were retried
// on another.
func (w *Worker) Retries() int64 { return w.retries.Load() }

// Restarts counts how many times the worker's process was replaced.
func (w *Worker) Restarts() int64 { return w.restarts.Load() }

// SetProcess makes p the process serving the slot, in state s.
func (w *Worker) SetProcess(p *Process, s State) {
	w.proc.Store(p)
	w.state.Store(int32(s))
	w.follow(p, s)
	w.changes.Load().fire()
}

// ClearProcess records that no process serves the slot, in state s: the
// process it had exited. Its up stretch ends with ErrWorkerGone (see
// Process.UpContext).
func (w *Worker) ClearProcess(s State) {
	old := w.proc.Swap(nil)
	w.failedStart.Store(old != nil && !old.wasUp.Load())
	w.state.Store(int32(s))
	old.end(ErrWorkerGone)
	w.changes.Load().fire()
}

// SetState sets the state and returns the previous one.
func (w *Worker) SetState(s State) State {
	old := State(w.state.Swap(int32(s)))
	w.follow(w.proc.Load(), s)
	if old != s {
		w.changes.Load().fire()
	}
	return old
}

// CompareAndSwapState sets the state to new only if it is old, so a health
// check does not undo a transition made meanwhile by the supervisor.
func (w *Worker) CompareAndSwapState(old, new State) bool {
	if !w.state.CompareAndSwap(int32(old), int32(new)) {
		return false
	}
	w.follow(w.proc.Load(), new)
	if old != new {
		w.changes.Load().fire()
	}
	return true
}

// follow keeps the process's up stretch in step with the state: armed
// while up, ended when down. Other states (starting, and stopped while a
// process drains) leave it as it is, so a drained process's requests
// finish.
func (w *Worker) follow(p *Process, s State) {
	switch s {
	case Up:
		p.arm()
	case Down, Backoff:
		p.end(ErrWorkerDown)
	}
}

// Latency is the worker's response-time record, over all its processes.
func (w *Worker) Latency() *Latency { return &w.latency }

// AddRestart counts one restart.
func (w *Worker) AddRestart() { w.restarts.Add(1) }

// Begin counts a request sent to the worker and returns the process it
// goes to, or nil when none serves the slot (then nothing is counted).
// End or Abandon must follow a non-nil Begin, with the same process.
func (w *Worker) Begin() *Process {
	p := w.proc.Load()
	if p == nil {
		return nil
	}
	w.inFlight.Add(1)
	p.inFlight.Add(1)
	return p
}

// ErrQueueTimeout: a request waited its turn at a worker whose places
// were all taken (Pool.SetMaxInFlight) for as long as it may.
var ErrQueueTimeout = errors.New("every place at the worker stayed taken")

// BeginWait is Begin, then, when the pool bounds the requests at a
// worker at once, a wait for a place among them: the requests past the
// bound wait here in the order they came, until ctx ends or wait passes
// (then nil and the error: ctx's cause, or ErrQueueTimeout; nothing stays
// counted). End or Abandon frees the place. Without a bound it does not
// wait. A request that waited goes to the process the worker has when its
// turn comes (a reload may have replaced the one it came for); when the
// worker is no longer up, BeginWait returns nil and no error, nothing
// counted, as Begin does for a worker with no process.
func (w *Worker) BeginWait(ctx context.Context, wait time.Duration) (*Process, error) {
	p := w.Begin()
	if p == nil || w.places == nil {
		return p, nil
	}
	select {
	case w.places <- struct{}{}:
		return p, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case w.places <- struct{}{}: // blocked senders go first come, first served
		return w.turnCame(p), nil
	case <-ctx.Done():
		err := context.Cause(ctx)
		w.unbegin(p)
		return nil, err
	case <-t.C:
		w.unbegin(p)
		return nil, ErrQueueTimeout
	}
}

// turnCame moves a request counted on p, which waited for its place, to
// the worker's process now: p, or the one that replaced it. When the
// worker is not up, it takes the request back and returns nil.
func (w *Worker) turnCame(p *Process) *Process {
	cur := w.proc.Load()
	if cur == p && w.Available() {
		return p
	}
	if cur == nil || !w.Available() {
		w.unbegin(p)
		w.free()
		return nil
	}
	p.inFlight.Add(-1)
	cur.inFlight.Add(1)
	return cur
}

// unbegin takes back a Begin whose request never went out.
func (w *Worker) unbegin(p *Process) {
	w.inFlight.Add(-1)
	p.inFlight.Add(-1)
}

// free gives back the place of a request that BeginWait let through.
func (w *Worker) free() {
	if w.places != nil {
		select {
		case <-w.places:
		default: // a Begin without BeginWait held none
		}
	}
}

// End closes a Begin on process p: ok means a response came back,
// otherwise the worker failed the request; retried means the request was
// then tried on another worker.
func (w *Worker) End(p *Process, ok, retried bool) {
	w.unbegin(p)
	w.free()
	if ok {
		w.requests.Add(1)
		p.requests.Add(1)
		return
	}
	w.errors.Add(1)
	if retried {
		w.retries.Add(1)
	}
}

// Abandon closes a Begin on process p for a request that neither got a
// response from the worker nor failed there: its client left first, or
// the balancer could not open a connection to the worker.
func (w *Worker) Abandon(p *Process) {
	w.unbegin(p)
	w.free()
}

// UnmarshalText reads a state's name, as /stats shows it.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown worker state %q", b)
}
