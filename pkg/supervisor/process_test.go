package supervisor

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// TestCommandRealProcess starts real shells: a simple command, with or
// without leading assignments, must become the worker process itself.
func TestCommandRealProcess(t *testing.T) {
	tests := []struct {
		name     string
		cmdline  string
		wantComm string
	}{
		{"simple command is exec'ed", "sleep 30", "sleep"},
		{"assignment goes through env", "FOO=1 sleep 30", "sleep"},
		{"quoted arguments", "sleep '30'", "sleep"},
		{"an exec of the user's own", "exec sleep 30", "sleep"},
		{"an exec of the user's own, indented", "  exec  sleep 30", "sleep"},
		{"control operators keep the shell", "true && sleep 30", "sh"},
	}
	st := newOSStarter(TextOutput(io.Discard, io.Discard))
	defer st.close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := st.start(1, Command(tt.cmdline), os.Environ())
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan exitStatus, 1)
			go func() { done <- p.Wait() }()
			defer func() {
				p.Signal(syscall.SIGKILL)
				<-done
			}()
			comm := waitComm(t, p.Pid(), tt.wantComm)
			if comm != tt.wantComm {
				t.Errorf("got process %q; want %q", comm, tt.wantComm)
			}
		})
	}
}

// TestCommandShellWords: a command line that starts with a word of the
// shell's own runs as the shell would run it, not as "exec WORD", which
// looks for a program by that name and ends with 127.
func TestCommandShellWords(t *testing.T) {
	st := newOSStarter(TextOutput(io.Discard, io.Discard))
	defer st.close()
	for _, tt := range []struct {
		cmdline string
		code    int
	}{
		{"exit 3", 3},
		{"cd /", 0},
		{"export FOO=1", 0},
		{"ulimit -n 64", 0},
		{"! true", 1},
		{"exec false", 1},
	} {
		p, err := st.start(1, Command(tt.cmdline), os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Wait(); got.Code != tt.code {
			t.Errorf("%q: %v; want exit code %d", tt.cmdline, got, tt.code)
		}
	}
}

// waitComm returns the command name of pid once the shell has exec'ed (or
// after a few tries).
func waitComm(t *testing.T, pid int, want string) string {
	t.Helper()
	var comm string
	for range 200 {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			t.Fatal(err)
		}
		comm = strings.TrimSpace(string(data))
		if comm == want {
			return comm
		}
		time.Sleep(5 * time.Millisecond)
	}
	return comm
}

func TestSignalReachesTheGroup(t *testing.T) {
	st := newOSStarter(TextOutput(io.Discard, io.Discard))
	defer st.close()
	// The shell stays (control operator) and its child sleeps: SIGTERM to
	// the group must end both, so Wait returns.
	p, err := st.start(1, Command("sleep 30; true"), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan exitStatus, 1)
	go func() { done <- p.Wait() }()
	waitComm(t, p.Pid(), "sh")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st2 := <-done
	if st2.Signal != syscall.SIGTERM {
		t.Errorf("got %v; want killed by SIGTERM", st2)
	}
}

func TestLeadingAssignment(t *testing.T) {
	tests := map[string]bool{
		"FOO=1 node app.js": true,
		"_X=a b":            true,
		"node app.js":       false,
		"node --x=1 app.js": false,
		"=1 node":           false,
		"1A=2 node":         false,
		"  NODE_ENV=prod x": true,
		"./run.sh A=1":      false,
	}
	for in, want := range tests {
		if got := leadingAssignment(in); got != want {
			t.Errorf("leadingAssignment(%q) = %v; want %v", in, got, want)
		}
	}
}

func TestOutputForwardedLineByLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	text := TextOutput(&stdout, &stderr)
	st := newOSStarter(text)
	p, err := st.start(7, Command("printf 'one\\ntwo\\npartial'; echo oops >&2"), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	st.close() // waits for the forwarders: the buffers are ours again
	pid := strconv.Itoa(p.Pid())
	wantOut := "worker=7 pid=" + pid + " | one\nworker=7 pid=" + pid + " | two\nworker=7 pid=" + pid + " | partial\n"
	if got := stdout.String(); got != wantOut {
		t.Errorf("stdout: got %q; want %q", got, wantOut)
	}
	if got, want := stderr.String(), "worker=7 pid="+pid+" | oops\n"; got != want {
		t.Errorf("stderr: got %q; want %q", got, want)
	}
}

// TestWorkerExitTakesItsGroup: a worker that leaves children behind (a
// shell running "cd app && node app.js" that is killed, a program's own
// helpers) must not leave them running, holding its port and its output
// pipes: when the worker exits, what is left of its process group is
// killed. Real processes: a shell that starts a background sleep, then
// the worker's own sleep; the shell is killed with SIGKILL.
func TestWorkerExitTakesItsGroup(t *testing.T) {
	childFile := filepath.Join(t.TempDir(), "child")
	p, stop := runReal(t, "sleep 300 & echo $! > "+childFile+"; sleep 301", time.Second)
	defer stop()

	var child int
	waitFor(t, func() bool {
		b, err := os.ReadFile(childFile)
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	waitFor(t, func() bool { w := p.Get(1); return w != nil && w.Pid() > 0 })
	leader := p.Get(1).Pid()
	if !alive(child) {
		t.Fatalf("leader %d, child %d alive %v: the worker did not start as planned", leader, child, alive(child))
	}
	if err := syscall.Kill(leader, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(child) {
		syscall.Kill(child, syscall.SIGKILL) // the test's own cleanup, by pid
		t.Fatalf("the worker's child %d still runs after the worker (pid %d) was killed", child, leader)
	}
}

// alive reports whether pid runs: it exists and is not a zombie (an
// orphan waiting for init to reap it is done).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(after, "Z")
}

// TestShellWorkerKeepsItsGrace: a worker run as "cd dir && prog" keeps
// the shell as the worker, prog its child. At the stop, SIGTERM goes to
// the group: the shell exits at once, prog begins a graceful shutdown
// (300 ms here). It must get the rest of the grace period (5 s), and the
// stop must wait for it, not kill it when the shell exits.
func TestShellWorkerKeepsItsGrace(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "child.sh")
	startF, doneF := filepath.Join(dir, "started"), filepath.Join(dir, "done")
	if err := os.WriteFile(script, []byte(`trap 'sleep 0.3; echo d > `+doneF+`; exit 0' TERM
echo s > `+startF+`
while :; do sleep 0.05; done
`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stop := runReal(t, "cd / && sh "+script, 5*time.Second)
	waitFor(t, func() bool { _, err := os.Stat(startF); return err == nil })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(doneF); err != nil {
		t.Error("the stop ended before the worker's program finished its graceful shutdown (or killed it)")
	}
}

// runReal runs one real worker process, the command line cmdline, that
// never restarts within a test; stop ends the supervisor's Run (once)
// and returns its error.
func runReal(t *testing.T, cmdline string, grace time.Duration) (*pool.Pool, func() error) {
	t.Helper()
	p := pool.New(new(pool.RoundRobin))
	s := newSupervisor(Spec{
		Argv:         Command(cmdline),
		Env:          os.Environ(),
		Grace:        grace,
		StartTimeout: time.Minute,
		Backoff:      Backoff{Initial: time.Minute, Factor: 1, Max: time.Minute, Reset: time.Hour},
		Check:        passCheck{},
		Health:       health.Options{Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1, StartInterval: time.Millisecond},
		Output:       TextOutput(io.Discard, io.Discard),
	}, p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, 1) }()
	var once sync.Once
	var err error
	return p, func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
}

// TestUsageCoversTheWorkersChildren: a worker run as "cd dir && prog"
// is the shell, and prog its child; its CPU and memory in /stats (and
// what max_memory compares) are the whole tree's, not the idle shell's.
func TestUsageCoversTheWorkersChildren(t *testing.T) {
	p, stop := runReal(t, `cd / && perl -e '$x = "a" x 60_000_000; sleep 60'`, time.Second)
	defer stop()
	var rss uint64
	deadline := time.Now().Add(30 * time.Second) // a new child is seen within treeEvery samples
	for rss < 50<<20 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if w := p.Get(1); w != nil {
			if pr := w.Process(); pr != nil {
				_, rss = pr.Usage()
			}
		}
	}
	if rss < 50<<20 {
		t.Errorf("worker's rss_bytes %d; want at least 50 MiB, its child's 60 MB string", rss)
	}
}
