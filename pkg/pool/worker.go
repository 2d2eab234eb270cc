package pool

import (
	"fmt"
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

// Worker is one slot of the cluster: a stable id (WORKER_ID, 1..N) and the
// process currently filling it. Its fields are accessed atomically and it
// must not be copied.
type Worker struct {
	id int

	addr    atomic.Pointer[string]
	pid     atomic.Int64
	started atomic.Int64 // unix nanoseconds of the current process's start; 0 if none
	state   atomic.Int32

	requests atomic.Int64
	inFlight atomic.Int64
	errors   atomic.Int64
	retries  atomic.Int64
	restarts atomic.Int64
}

// NewWorker returns a worker with the given id, in state Starting, with no
// process.
func NewWorker(id int) *Worker {
	w := &Worker{id: id}
	empty := ""
	w.addr.Store(&empty)
	return w
}

// ID is the worker's stable id, 1..N.
func (w *Worker) ID() int { return w.id }

// Addr is the worker's "127.0.0.1:PORT", or "" before its first start.
func (w *Worker) Addr() string { return *w.addr.Load() }

// Pid is the current process id, 0 when no process runs.
func (w *Worker) Pid() int { return int(w.pid.Load()) }

// State is the worker's current state.
func (w *Worker) State() State { return State(w.state.Load()) }

// Available reports whether the worker may get a new request.
func (w *Worker) Available() bool { return w.State() == Up }

// Uptime is how long the current process has been running, 0 if none.
func (w *Worker) Uptime(now time.Time) time.Duration {
	s := w.started.Load()
	if s == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, s))
}

// Requests counts the responses proxied from this worker.
func (w *Worker) Requests() int64 { return w.requests.Load() }

// InFlight counts the requests being forwarded to this worker now.
func (w *Worker) InFlight() int64 { return w.inFlight.Load() }

// Errors counts the requests this worker failed: refused, reset, timed out.
func (w *Worker) Errors() int64 { return w.errors.Load() }

// Retries counts the requests that failed on this worker and were retried
// on another.
func (w *Worker) Retries() int64 { return w.retries.Load() }

// Restarts counts how many times the worker's process was started again.
func (w *Worker) Restarts() int64 { return w.restarts.Load() }

// SetProcess records a newly spawned process, listening on addr. The state
// becomes Starting.
func (w *Worker) SetProcess(pid int, addr string, started time.Time) {
	w.addr.Store(&addr)
	w.pid.Store(int64(pid))
	w.started.Store(started.UnixNano())
	w.state.Store(int32(Starting))
}

// ClearProcess records that the process is gone and sets the state.
func (w *Worker) ClearProcess(s State) {
	w.pid.Store(0)
	w.started.Store(0)
	w.state.Store(int32(s))
}

// SetState sets the state and returns the previous one.
func (w *Worker) SetState(s State) State { return State(w.state.Swap(int32(s))) }

// CompareAndSwapState sets the state to new only if it is old, so a health
// check does not undo a transition made meanwhile by the supervisor.
func (w *Worker) CompareAndSwapState(old, new State) bool {
	return w.state.CompareAndSwap(int32(old), int32(new))
}

// AddRestart counts one restart.
func (w *Worker) AddRestart() { w.restarts.Add(1) }

// Begin counts a request sent to the worker; End must follow.
func (w *Worker) Begin() { w.inFlight.Add(1) }

// End closes a Begin: ok means a response came back, otherwise the
// worker failed the request; retried means the request was then tried
// on another worker.
func (w *Worker) End(ok, retried bool) {
	w.inFlight.Add(-1)
	if ok {
		w.requests.Add(1)
		return
	}
	w.errors.Add(1)
	if retried {
		w.retries.Add(1)
	}
}
