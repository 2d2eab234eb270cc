package supervisor

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

// TestReaperRealChildren runs the reaper over real processes. The test
// process is no PID 1, so it makes itself a child subreaper for the
// test: orphans then come to it as they would to PID 1.
func TestReaperRealChildren(t *testing.T) {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skipf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0)

	lines := make(chan string, 64)
	out := func(_, _ int, _ bool, line []byte) { lines <- string(line) }
	st := newOSStarterReaper(out, startReaper(waitAny, reapInterval))
	defer st.close()
	sh := func(script string) process {
		t.Helper()
		p, err := st.start(1, []string{"/bin/sh", "-c", script}, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("exit code", func(t *testing.T) {
		if got, want := sh("exit 3").Wait(), (exitStatus{Code: 3}); got != want {
			t.Errorf("got %v; want %v", got, want)
		}
	})

	t.Run("killed", func(t *testing.T) {
		p := sh("exec sleep 30")
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if got, want := p.Wait(), (exitStatus{Code: -1, Signal: syscall.SIGKILL}); got != want {
			t.Errorf("got %v; want %v", got, want)
		}
	})

	t.Run("fast exits are not lost", func(t *testing.T) {
		var ps []process
		for range 20 {
			ps = append(ps, sh("exit 0"))
		}
		for _, p := range ps {
			if got, want := p.Wait(), (exitStatus{Code: 0}); got != want {
				t.Errorf("pid %d: got %v; want %v", p.Pid(), got, want)
			}
		}
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		// The shell exits and leaves its background sleep to us.
		p := sh("sleep 0.05 & echo $!")
		if got, want := p.Wait(), (exitStatus{Code: 0}); got != want {
			t.Errorf("shell: got %v; want %v", got, want)
		}
		var orphan int
		select {
		case line := <-lines:
			n, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatalf("got output %q; want the orphan's pid", line)
			}
			orphan = n
		case <-time.After(10 * time.Second):
			t.Fatal("no pid from the shell within 10s")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			data, err := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat")
			if errors.Is(err, os.ErrNotExist) {
				return // reaped
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d not reaped within 10s: %s", orphan, data)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
