package supervisor

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeKernel stands for the process table behind wait4(-1, WNOHANG): the
// children that run and the zombies that wait to be reaped, in order.
type fakeKernel struct {
	mu      sync.Mutex
	next    int
	running map[int]bool
	zombies []fakeZombie
}

type fakeZombie struct {
	pid int
	st  syscall.WaitStatus
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{next: 100, running: map[int]bool{}}
}

// fork starts a child with the next pid.
func (k *fakeKernel) fork() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.next++
	k.running[k.next] = true
	return k.next
}

// adopt makes pid a child: an orphan re-parented to PID 1, or a new child
// that got a pid used before.
func (k *fakeKernel) adopt(pid int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.running[pid] = true
}

func (k *fakeKernel) exit(pid int, st syscall.WaitStatus) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.running, pid)
	k.zombies = append(k.zombies, fakeZombie{pid, st})
}

func (k *fakeKernel) zombieCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.zombies)
}

// wait is the waitFunc: wait4(-1, status, WNOHANG, nil).
func (k *fakeKernel) wait(st *syscall.WaitStatus) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.zombies) > 0 {
		z := k.zombies[0]
		k.zombies = k.zombies[1:]
		*st = z.st
		return z.pid, nil
	}
	if len(k.running) > 0 {
		return 0, nil
	}
	return 0, syscall.ECHILD
}

// Wait statuses as the kernel encodes them.
func exited(code int) syscall.WaitStatus             { return syscall.WaitStatus(code << 8) }
func killedBy(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }
func spawnFake(t *testing.T, r *reaper, k *fakeKernel) (int, <-chan syscall.WaitStatus) {
	t.Helper()
	var pid int
	ch, err := r.spawn(func() (int, error) { pid = k.fork(); return pid, nil })
	if err != nil {
		t.Fatal(err)
	}
	return pid, ch
}

// received returns the status on ch, failing the test if none comes.
func received(t *testing.T, ch <-chan syscall.WaitStatus) syscall.WaitStatus {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok {
			t.Fatal("status channel closed; want a status")
		}
		return st
	case <-time.After(10 * time.Second):
		t.Fatal("no status within 10s")
		return 0
	}
}

// pending fails the test if ch already holds a status.
func pending(t *testing.T, ch <-chan syscall.WaitStatus, what string) {
	t.Helper()
	select {
	case st := <-ch:
		t.Errorf("%s: got status %v; want none yet", what, statusOf(st))
	default:
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name string
		st   syscall.WaitStatus
		want exitStatus
	}{
		{"exit 0", exited(0), exitStatus{Code: 0}},
		{"exit 3", exited(3), exitStatus{Code: 3}},
		{"exit 255", exited(255), exitStatus{Code: 255}},
		{"SIGKILL", killedBy(syscall.SIGKILL), exitStatus{Code: -1, Signal: syscall.SIGKILL}},
		{"SIGTERM", killedBy(syscall.SIGTERM), exitStatus{Code: -1, Signal: syscall.SIGTERM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.st); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestReaperDispatch(t *testing.T) {
	t.Run("each status goes to its waiter", func(t *testing.T) {
		k := newFakeKernel()
		r := newReaper(k.wait)
		a, chA := spawnFake(t, r, k)
		b, chB := spawnFake(t, r, k)
		_, chC := spawnFake(t, r, k)
		k.exit(b, exited(3))
		k.exit(a, killedBy(syscall.SIGKILL))
		r.reap()
		if got, want := statusOf(received(t, chA)), (exitStatus{Code: -1, Signal: syscall.SIGKILL}); got != want {
			t.Errorf("first child: got %v; want %v", got, want)
		}
		if got, want := statusOf(received(t, chB)), (exitStatus{Code: 3}); got != want {
			t.Errorf("second child: got %v; want %v", got, want)
		}
		pending(t, chC, "third child, still running")
	})

	t.Run("unknown pids are discarded", func(t *testing.T) {
		k := newFakeKernel()
		r := newReaper(k.wait)
		_, ch := spawnFake(t, r, k)
		const orphan = 42
		k.adopt(orphan)
		k.exit(orphan, exited(0))
		r.reap()
		if n := k.zombieCount(); n != 0 {
			t.Errorf("got %d zombies left; want 0", n)
		}
		pending(t, ch, "running child")
		// A new child that gets the orphan's pid must not get its status.
		reused, err := r.spawn(func() (int, error) { k.adopt(orphan); return orphan, nil })
		if err != nil {
			t.Fatal(err)
		}
		r.reap()
		pending(t, reused, "child with a reused pid")
		k.exit(orphan, exited(7))
		r.reap()
		if got, want := statusOf(received(t, reused)), (exitStatus{Code: 7}); got != want {
			t.Errorf("child with a reused pid: got %v; want %v", got, want)
		}
	})

	t.Run("an exit before registration is not lost", func(t *testing.T) {
		k := newFakeKernel()
		r := newReaper(k.wait)
		reaped := make(chan struct{})
		ch, err := r.spawn(func() (int, error) {
			pid := k.fork()
			k.exit(pid, exited(5)) // dies before spawn has registered it
			if r.mu.TryLock() {
				r.mu.Unlock()
				t.Error("the reaper could reap while a child was being started")
			}
			// A SIGCHLD arrives now: this reap must wait for the
			// registration.
			go func() { r.reap(); close(reaped) }()
			return pid, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		<-reaped
		if got, want := statusOf(received(t, ch)), (exitStatus{Code: 5}); got != want {
			t.Errorf("got %v; want %v", got, want)
		}
	})

	t.Run("a failed start registers nothing", func(t *testing.T) {
		k := newFakeKernel()
		r := newReaper(k.wait)
		boom := errors.New("exec failed")
		if _, err := r.spawn(func() (int, error) { return 0, boom }); !errors.Is(err, boom) {
			t.Errorf("got error %v; want %v", err, boom)
		}
		if n := len(r.waiters); n != 0 {
			t.Errorf("got %d registered pids; want 0", n)
		}
	})
}

func TestReaperLoop(t *testing.T) {
	t.Run("reaps at SIGCHLD", func(t *testing.T) {
		k := newFakeKernel()
		r := startReaper(k.wait, time.Hour) // only the signal can wake it
		defer r.stop()
		pid, ch := spawnFake(t, r, k)
		k.exit(pid, exited(2))
		if err := syscall.Kill(os.Getpid(), syscall.SIGCHLD); err != nil {
			t.Fatal(err)
		}
		if got, want := statusOf(received(t, ch)), (exitStatus{Code: 2}); got != want {
			t.Errorf("got %v; want %v", got, want)
		}
	})

	t.Run("reaps at each tick without SIGCHLD", func(t *testing.T) {
		k := newFakeKernel()
		r := startReaper(k.wait, time.Millisecond)
		defer r.stop()
		pid, ch := spawnFake(t, r, k)
		k.exit(pid, killedBy(syscall.SIGTERM))
		if got, want := statusOf(received(t, ch)), (exitStatus{Code: -1, Signal: syscall.SIGTERM}); got != want {
			t.Errorf("got %v; want %v", got, want)
		}
	})

	t.Run("stop reaps once more and releases the waiters", func(t *testing.T) {
		k := newFakeKernel()
		r := startReaper(k.wait, time.Hour)
		_, running := spawnFake(t, r, k)
		k.adopt(42)
		k.exit(42, exited(0))
		r.stop()
		if n := k.zombieCount(); n != 0 {
			t.Errorf("got %d zombies left; want 0", n)
		}
		select {
		case st, ok := <-running:
			if ok {
				t.Errorf("got status %v for a running child; want the channel closed", statusOf(st))
			}
		default:
			t.Error("the channel of a running child is still open after stop")
		}
		if _, err := r.spawn(func() (int, error) { t.Error("started a child after stop"); return 0, nil }); !errors.Is(err, errReaperStopped) {
			t.Errorf("spawn after stop: got error %v; want %v", err, errReaperStopped)
		}
	})
}

// TestWaitAfterReaperStopped: a worker whose status the reaper never got
// reports an error, not a made-up exit code.
func TestWaitAfterReaperStopped(t *testing.T) {
	r := startReaper(waitAny, reapInterval)
	st := newOSStarterReaper(TextOutput(io.Discard, io.Discard), r)
	p, err := st.start(1, []string{"/bin/sh", "-c", "exec sleep 30"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	r.stop()
	got := p.Wait()
	if !errors.Is(got.Err, errReaperStopped) {
		t.Errorf("got %v; want error %v", got, errReaperStopped)
	}
	// Clean up: kill and reap the sleep by its pid ourselves.
	syscall.Kill(pid, syscall.SIGKILL)
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	st.reaper = nil // already stopped
	st.close()
}
