package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// reapInterval is the reaper's safety net: it also looks for exited
// children this often, in case a SIGCHLD notification never arrives
// (someone called signal.Reset, say).
const reapInterval = time.Second

// errReaperStopped is the Err of a process whose status the reaper could
// no longer collect because it was stopped first.
var errReaperStopped = errors.New("supervisor: reaper stopped before the process exited")

// waitFunc collects one exited child without blocking, as
// wait4(-1, status, WNOHANG, nil) does: it returns the child's pid, 0 when
// children run but none has exited, or an error (ECHILD: no child at all).
type waitFunc func(status *syscall.WaitStatus) (pid int, err error)

// waitAny is the real waitFunc.
func waitAny(status *syscall.WaitStatus) (int, error) {
	return syscall.Wait4(-1, status, syscall.WNOHANG, nil)
}

// reaper collects the exit status of every child of the process, which is
// what PID 1 must do: the kernel re-parents orphans to it (the processes
// a -cmd worker left behind), and each stays a zombie until PID 1 waits
// for it. One wait4(-1) loop takes every status, so the workers' statuses
// must come from it too: each worker's pid is registered with a channel,
// and the loop hands the status to it. Statuses of pids nobody registered
// are dropped: they are the orphans.
//
// A worker is registered while the reaper's lock is held from before its
// fork to after, so no status can arrive for a pid not yet known; keeping
// unknown statuses for a while instead would hand an orphan's old status
// to a new worker that got the same pid.
type reaper struct {
	wait waitFunc

	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus // pid -> its status, buffered
	stopped bool

	done  chan struct{} // closed by stop
	ended chan struct{} // closed when the loop goroutine returned; nil: no loop
}

// newReaper returns a reaper that collects statuses with wait when its
// reap method is called; startReaper also runs the loop that calls it.
func newReaper(wait waitFunc) *reaper {
	return &reaper{
		wait:    wait,
		waiters: make(map[int]chan syscall.WaitStatus),
		done:    make(chan struct{}),
	}
}

// startReaper returns a reaper whose goroutine reaps at every SIGCHLD and
// every interval, until stop.
func startReaper(wait waitFunc, interval time.Duration) *reaper {
	r := newReaper(wait)
	r.ended = make(chan struct{})
	// Notify before the first fork: a SIGCHLD is never missed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go r.loop(sigs, interval)
	return r
}

func (r *reaper) loop(sigs chan os.Signal, interval time.Duration) {
	defer close(r.ended)
	defer signal.Stop(sigs)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// SIGCHLDs that arrive together are delivered as one: reap loops
		// until no exited child is left, so one wake-up is enough.
		r.reap()
		select {
		case <-sigs:
		case <-t.C:
		case <-r.done:
			return
		}
	}
}

// spawn calls start, which starts one child and returns its pid, and
// registers the pid: the returned channel receives the child's wait
// status, or is closed if the reaper stops first. The reaper cannot reap
// while start runs, so a child that exits at once is not lost.
func (r *reaper) spawn(start func() (int, error)) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, errReaperStopped
	}
	pid, err := start()
	if err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return ch, nil
}

// reap collects every child that has exited, hands the status of each
// registered one to its waiter, and drops the rest.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reapLocked()
}

func (r *reaper) reapLocked() {
	for {
		var st syscall.WaitStatus
		pid, err := r.wait(&st)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no child; 0: none has exited yet
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- st // buffered, and each pid is registered once
		}
	}
}

// stop ends the loop goroutine (if startReaper ran it) after one last
// reap, and closes the channels of the children still registered. Call
// it once, when no worker runs.
func (r *reaper) stop() {
	close(r.done)
	if r.ended != nil {
		<-r.ended
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.reapLocked()
	for pid, ch := range r.waiters {
		delete(r.waiters, pid)
		close(ch)
	}
}
