package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// process is the seam between the supervisor and the operating system, so
// tests can drive exits and restarts with a fake.
type process interface {
	Pid() int
	// Signal sends sig to the process and everything in its group.
	Signal(sig syscall.Signal) error
	// Wait blocks until the process exits and describes how.
	Wait() exitStatus
}

// starter starts processes.
type starter interface {
	start(argv, env []string) (process, error)
}

// exitStatus says how a process ended.
type exitStatus struct {
	Code   int            // exit code, or -1 when killed by a signal
	Signal syscall.Signal // the signal that killed it, or 0
	Err    error          // Wait failed
}

func (e exitStatus) String() string {
	switch {
	case e.Err != nil:
		return e.Err.Error()
	case e.Signal != 0:
		return "signal " + e.Signal.String()
	default:
		return fmt.Sprintf("exit code %d", e.Code)
	}
}

// osStarter forks every worker from one goroutine locked to its OS thread.
// Pdeathsig fires when the thread that forked the child exits, not the
// process (golang/go#27505); a thread that lives as long as the
// supervisor makes it mean "when the balancer dies".
type osStarter struct {
	stdout, stderr io.Writer
	reqs           chan startReq
	done           chan struct{}
}

type startReq struct {
	argv, env []string
	reply     chan startReply
}

type startReply struct {
	p   process
	err error
}

func newOSStarter(stdout, stderr io.Writer) *osStarter {
	s := &osStarter{stdout: stdout, stderr: stderr, reqs: make(chan startReq), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine ends, its thread ends with
		// it, after every child is gone.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-s.reqs:
				p, err := s.fork(r.argv, r.env)
				r.reply <- startReply{p, err}
			case <-s.done:
				return
			}
		}
	}()
	<-ready
	return s
}

func (s *osStarter) start(argv, env []string) (process, error) {
	reply := make(chan startReply, 1)
	select {
	case s.reqs <- startReq{argv, env, reply}:
	case <-s.done:
		return nil, errors.New("supervisor stopped")
	}
	r := <-reply
	return r.p, r.err
}

// close ends the forking thread. Call it only when no child runs.
func (s *osStarter) close() { close(s.done) }

func (s *osStarter) fork(argv, env []string) (process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout = s.stdout
	cmd.Stderr = s.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &osProcess{cmd: cmd}, nil
}

type osProcess struct{ cmd *exec.Cmd }

func (p *osProcess) Pid() int { return p.cmd.Process.Pid }

func (p *osProcess) Signal(sig syscall.Signal) error {
	// The negative pid is the process group: a shell's children too.
	err := syscall.Kill(-p.cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

func (p *osProcess) Wait() exitStatus {
	err := p.cmd.Wait()
	if p.cmd.ProcessState == nil {
		return exitStatus{Code: -1, Err: err}
	}
	st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return exitStatus{Code: -1, Err: err}
	}
	if st.Signaled() {
		return exitStatus{Code: -1, Signal: st.Signal()}
	}
	return exitStatus{Code: st.ExitStatus()}
}
