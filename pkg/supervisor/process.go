package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/internal/procgroup"
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
	start(id int, argv, env []string) (process, error)
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
//
// When the balancer is PID 1 (in a container), a reaper collects the
// status of every child, the workers' and the orphans' alike (see
// reaper). The balancer does not make itself a child subreaper
// (PR_SET_CHILD_SUBREAPER) otherwise: outside PID 1 the orphans go to an
// init that reaps them, and exec.Cmd.Wait, which waits for one pid only,
// cannot take the status of a child that some other part of the process
// started and waits for.
type osStarter struct {
	out    Output
	reqs   chan startReq
	done   chan struct{}
	fwd    sync.WaitGroup // output forwarders
	reaper *reaper        // nil: each worker's exec.Cmd.Wait reaps it
}

type startReq struct {
	id        int
	argv, env []string
	reply     chan startReply
}

type startReply struct {
	p   process
	err error
}

func newOSStarter(out Output) *osStarter {
	var r *reaper
	if os.Getpid() == 1 {
		r = startReaper(waitAny, reapInterval)
	}
	return newOSStarterReaper(out, r)
}

// newOSStarterReaper returns an osStarter whose children r reaps, or, if
// r is nil, their exec.Cmd.Wait. close stops r.
func newOSStarterReaper(out Output, r *reaper) *osStarter {
	s := &osStarter{out: out, reqs: make(chan startReq), done: make(chan struct{}), reaper: r}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine ends, its thread ends with
		// it, after every child is gone.
		runtime.LockOSThread()
		close(ready)
		for {
			select {
			case r := <-s.reqs:
				p, err := s.fork(r.id, r.argv, r.env)
				r.reply <- startReply{p, err}
			case <-s.done:
				return
			}
		}
	}()
	<-ready
	return s
}

func (s *osStarter) start(id int, argv, env []string) (process, error) {
	reply := make(chan startReply, 1)
	select {
	case s.reqs <- startReq{id, argv, env, reply}:
	case <-s.done:
		return nil, errors.New("supervisor stopped")
	}
	r := <-reply
	return r.p, r.err
}

// close ends the forking thread, and the reaper if there is one. Call it
// only when no child runs. It waits a little for the output of the last
// workers to be forwarded; a grandchild that escaped the process group
// may hold a pipe open longer. The reaper stops last, so the grandchildren
// that end meanwhile are reaped.
func (s *osStarter) close() {
	close(s.done)
	done := make(chan struct{})
	go func() { s.fwd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	if s.reaper != nil {
		s.reaper.stop()
	}
}

func (s *osStarter) fork(id int, argv, env []string) (process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	// Pipes of our own rather than io.Writers: exec.Cmd.Wait would wait
	// for its copying goroutines, and so for any grandchild that keeps
	// the pipe open after the worker died.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = procgroup.Attr()
	var exit <-chan syscall.WaitStatus
	if s.reaper != nil {
		exit, err = s.reaper.spawn(func() (int, error) {
			if err := cmd.Start(); err != nil {
				return 0, err
			}
			return cmd.Process.Pid, nil
		})
	} else {
		err = cmd.Start()
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	pid := cmd.Process.Pid
	s.fwd.Go(func() { forwardLines(outR, id, pid, false, s.out) })
	s.fwd.Go(func() { forwardLines(errR, id, pid, true, s.out) })
	return &osProcess{cmd: cmd, pid: pid, exit: exit}, nil
}

// maxLine is the longest line forwarded whole; longer ones are cut into
// pieces of this size.
const maxLine = 64 << 10

// forwardLines reads r line by line until EOF and hands each line to out.
func forwardLines(r *os.File, id, pid int, stderr bool, out Output) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out(id, pid, stderr, bytes.TrimRight(line, "\r\n"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// Output receives each line a worker writes, without its line end:
// stderr tells which stream. It is called from one goroutine per stream
// and must not keep line.
type Output func(worker, pid int, stderr bool, line []byte)

// TextOutput writes each line to stdout or stderr with a "worker=ID
// pid=PID | " prefix, as one write, so lines of different workers do not
// mix.
func TextOutput(stdout, stderr io.Writer) Output {
	var mu sync.Mutex
	return func(worker, pid int, isErr bool, line []byte) {
		buf := make([]byte, 0, len(line)+32)
		buf = fmt.Appendf(buf, "worker=%d pid=%d | ", worker, pid)
		buf = append(append(buf, line...), '\n')
		w := stdout
		if isErr {
			w = stderr
		}
		mu.Lock()
		w.Write(buf)
		mu.Unlock()
	}
}

// LogOutput sends each line to log as a record with worker, pid and
// stream attributes: for -log-format json.
func LogOutput(log *slog.Logger) Output {
	return func(worker, pid int, isErr bool, line []byte) {
		stream := "stdout"
		if isErr {
			stream = "stderr"
		}
		log.Info(string(line), "worker", worker, "pid", pid, "stream", stream)
	}
}

type osProcess struct {
	cmd *exec.Cmd
	// pid is kept apart: Process.Release sets cmd.Process.Pid to -1, and
	// Signal would then send kill(-(-1)), to PID 1, the balancer itself.
	pid int
	// exit receives the wait status from the reaper when there is one;
	// nil means cmd.Wait reaps the process.
	exit <-chan syscall.WaitStatus
}

func (p *osProcess) Pid() int { return p.pid }

func (p *osProcess) Signal(sig syscall.Signal) error {
	// The negative pid is the process group: a shell's children too.
	err := syscall.Kill(-p.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// groupRuns reports whether the process's group has a member that is not
// a zombie: an orphan that whoever inherited it has not reaped yet still
// answers signal 0. It reads /proc, all of it: call it seldom. True when
// /proc cannot be read.
func (p *osProcess) groupRuns() bool { return groupRuns(p.pid) }

func groupRuns(pgid int) bool {
	want := strconv.Itoa(pgid)
	found := false
	readable := eachProc(func(_ int, f []string) bool {
		// f: state ppid pgrp ...
		found = len(f) >= 3 && f[2] == want && f[0] != "Z"
		return !found
	})
	return found || !readable
}

// eachProc calls fn with the pid of every process and the fields of its
// /proc/PID/stat that follow the command name (state, ppid, pgrp, ...),
// until fn returns false. It reads /proc, all of it: call it seldom. It
// reports false when /proc cannot be read, or has no stat files (a BSD's
// procfs).
func eachProc(fn func(pid int, fields []string) bool) bool {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and
		// parentheses, so the fields count from the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		if !fn(pid, strings.Fields(string(b[i+1:]))) {
			break
		}
	}
	return true
}

func (p *osProcess) Wait() exitStatus {
	if p.exit != nil {
		st, ok := <-p.exit
		// The reaper took the status, so cmd.Wait would fail with ECHILD;
		// Release frees what os.StartProcess kept for it (a pidfd).
		p.cmd.Process.Release()
		if !ok {
			return exitStatus{Code: -1, Err: errReaperStopped}
		}
		return statusOf(st)
	}
	err := p.cmd.Wait()
	if p.cmd.ProcessState == nil {
		return exitStatus{Code: -1, Err: err}
	}
	st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return exitStatus{Code: -1, Err: err}
	}
	return statusOf(st)
}

// statusOf describes a wait status of an exited process.
func statusOf(st syscall.WaitStatus) exitStatus {
	if st.Signaled() {
		return exitStatus{Code: -1, Signal: st.Signal()}
	}
	return exitStatus{Code: st.ExitStatus()}
}
