package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/internal/procgroup"
)

// proc is one long-running child (a balancer, nginx, haproxy, a Node
// cluster or a lone backend) that the bench started and must stop.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done is closed
}

// pid is the process id of the child itself (its process group id too).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has already ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail is the end of the child's combined output, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return tail(string(b), 5)
}

// tail keeps the last n non-empty lines of s, joined by " | ".
func tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// procs keeps every child the bench started, so that each one is stopped,
// by its pid, on every way out: the end of a scenario, an error, or
// Ctrl-C.
type procs struct {
	dir string // where the children's logs go

	mu   sync.Mutex
	list []*proc
}

// start runs argv in the background with its output in dir/name.log.
// env entries are added to the bench's own environment, without HOST
// (see childEnv).
//
// Each child leads a process group of its own: Ctrl-C in the terminal
// then reaches only the bench, which stops the children in order, and
// a last SIGKILL to the group also takes what the child forked into its
// own group: nginx's worker processes, Node's cluster workers. The
// balancer's workers are not in it: the balancer starts each one in a
// process group of its own. They end with the balancer: on SIGTERM it
// stops them itself (SIGTERM, then SIGKILL after its grace period), and
// should it die first, by SIGKILL, each worker gets SIGKILL from its
// Pdeathsig (set from a thread that lives as long as the balancer), and
// the built-in backend also exits when it sees its parent pid change.
// Pdeathsig on the bench's children covers the bench itself being
// killed with SIGKILL.
func (ps *procs) start(name string, env []string, argv ...string) (*proc, error) {
	logPath := fmt.Sprintf("%s/%s.log", ps.dir, name)
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv(os.Environ(), env)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = procgroup.Attr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// childEnv is base without HOST, plus extra. The built-in backend and
// bench/node/app.js listen on HOST when it is set, and every address the
// bench loads is 127.0.0.1: a HOST inherited from the shell would make
// them listen elsewhere, and the runs fail.
func childEnv(base, extra []string) []string {
	var env []string
	for _, kv := range base {
		if !strings.HasPrefix(kv, "HOST=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// stop sends SIGTERM to the child's pid, waits up to grace for it to
// exit, then SIGKILLs its process group. It is safe to call twice.
func (ps *procs) stop(p *proc, grace time.Duration) {
	if p == nil {
		return
	}
	ps.mu.Lock()
	for i, q := range ps.list {
		if q == p {
			ps.list = append(ps.list[:i], ps.list[i+1:]...)
			break
		}
	}
	ps.mu.Unlock()
	if !p.exited() {
		_ = syscall.Kill(p.pid(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Whatever is left in the group (a worker that ignored its parent's
	// exit) goes now; ESRCH just means nothing was left.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// stopAll stops every child still running, newest first.
func (ps *procs) stopAll() {
	for {
		ps.mu.Lock()
		n := len(ps.list)
		var p *proc
		if n > 0 {
			p = ps.list[n-1]
		}
		ps.mu.Unlock()
		if p == nil {
			return
		}
		ps.stop(p, 10*time.Second)
	}
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the child binds it; the start then fails and says so.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// output runs a short command to its end and returns its combined output.
// The context bounds it; on cancel the command gets SIGKILL.
func output(ctx context.Context, env []string, dir string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return buf.String(), err
}
