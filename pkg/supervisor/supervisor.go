package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Spec says how to run the workers.
type Spec struct {
	// Argv is the worker's program and arguments.
	Argv []string
	// Env is the environment every worker starts from; PORT, WORKER_ID
	// and GOMAXPROCS are set on top of it. Nil means os.Environ().
	Env []string
	// Grace is the time between SIGTERM and SIGKILL when a worker is
	// stopped.
	Grace   time.Duration
	Backoff Backoff
	// Check is the active health check; Health its timing. Health.Log
	// and Health.OnDown are set by the supervisor.
	Check  health.Checker
	Health health.Options
	// Log receives one line per lifecycle event. Nil discards them.
	Log *slog.Logger
	// Stdout and Stderr receive the workers' output. Nil means the
	// balancer's own.
	Stdout, Stderr *os.File
}

// Command returns the Argv for a worker command line given by the user.
// It runs under /bin/sh, so quoting, $PORT and other shell syntax work. A
// simple command is exec'ed by the shell, so the program itself is the
// worker process (its pid, CPU and memory are the ones reported);
// "NAME=value prog" goes through env(1) for that, since exec takes no
// assignments. A command line with control operators (;, &&, |, ...)
// keeps the shell as the worker; signals reach its children anyway, as
// they go to the whole process group.
func Command(cmdline string) []string {
	switch {
	case strings.ContainsAny(cmdline, ";&|()`\n<>") || strings.Contains(cmdline, "$("):
		return []string{"/bin/sh", "-c", cmdline}
	case leadingAssignment(cmdline):
		return []string{"/bin/sh", "-c", "exec env " + cmdline}
	default:
		return []string{"/bin/sh", "-c", "exec " + cmdline}
	}
}

// leadingAssignment reports whether the command line starts with a
// NAME=value word.
func leadingAssignment(cmdline string) bool {
	word, _, _ := strings.Cut(strings.TrimSpace(cmdline), " ")
	name, _, ok := strings.Cut(word, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Supervisor runs the worker processes. Create it with New and call Run
// once.
type Supervisor struct {
	spec  Spec
	pool  *pool.Pool
	start starter
	log   *slog.Logger

	events chan func()   // run by the loop goroutine, which owns the fields below
	quit   chan struct{} // closed when the loop has ended
	slots  map[int]*slot
	wg     sync.WaitGroup // process waiters and health monitors
}

// slot is one WORKER_ID and the process filling it. Only the loop
// goroutine touches it.
type slot struct {
	w       *pool.Worker
	proc    process
	gen     int // counts the processes started in this slot
	crashes int // in a row
	started time.Time
	stop    func() // stops the health monitor of the current process
	timer   *time.Timer
	killer  *time.Timer // SIGKILL after the grace period
}

// New returns a supervisor that adds its workers to p.
func New(spec Spec, p *pool.Pool) *Supervisor {
	return newSupervisor(spec, p, nil)
}

func newSupervisor(spec Spec, p *pool.Pool, st starter) *Supervisor {
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	if spec.Env == nil {
		spec.Env = os.Environ()
	}
	if spec.Stdout == nil {
		spec.Stdout = os.Stdout
	}
	if spec.Stderr == nil {
		spec.Stderr = os.Stderr
	}
	return &Supervisor{
		spec:   spec,
		pool:   p,
		start:  st,
		log:    spec.Log,
		events: make(chan func(), 64),
		quit:   make(chan struct{}),
		slots:  make(map[int]*slot),
	}
}

// Run starts n workers and keeps them running until ctx is done; then it
// stops them all (SIGTERM, then SIGKILL after the grace period), waits for
// every one, and returns.
func (s *Supervisor) Run(ctx context.Context, n int) error {
	if len(s.spec.Argv) == 0 {
		return errors.New("supervisor: no worker command")
	}
	if s.start == nil {
		st := newOSStarter(s.spec.Stdout, s.spec.Stderr)
		defer st.close()
		s.start = st
	}
	for id := 1; id <= n; id++ {
		sl := &slot{w: pool.NewWorker(id)}
		s.slots[id] = sl
		s.pool.Add(sl.w)
		s.spawn(sl)
	}
	for {
		select {
		case fn := <-s.events:
			fn()
		case <-ctx.Done():
			s.stopAll()
			close(s.quit)
			s.wg.Wait()
			return nil
		}
	}
}

// stopAll stops every worker and runs the loop until all have exited.
func (s *Supervisor) stopAll() {
	running := 0
	for _, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
		s.stopMonitor(sl)
		sl.w.SetState(pool.Stopped)
		if sl.proc != nil {
			running++
			s.terminate(sl)
		}
	}
	for running > 0 {
		fn := <-s.events
		fn()
		running = 0
		for _, sl := range s.slots {
			if sl.proc != nil {
				running++
			}
		}
	}
}

// terminate sends SIGTERM, and SIGKILL if the process outlives the grace
// period.
func (s *Supervisor) terminate(sl *slot) {
	p, gen := sl.proc, sl.gen
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("signal worker", "worker", sl.w.ID(), "pid", p.Pid(), "err", err)
	}
	sl.killer = time.AfterFunc(s.spec.Grace, func() {
		s.send(func() {
			if sl.proc == p && sl.gen == gen {
				s.log.Warn("worker did not stop in time; killing it", "worker", sl.w.ID(), "pid", p.Pid(), "grace", s.spec.Grace)
				p.Signal(syscall.SIGKILL)
			}
		})
	})
}

// send hands fn to the loop goroutine; after the loop ended, fn is dropped.
func (s *Supervisor) send(fn func()) {
	select {
	case s.events <- fn:
	case <-s.quit:
	}
}

// spawn starts a process in sl; on failure it schedules a restart.
func (s *Supervisor) spawn(sl *slot) {
	id := sl.w.ID()
	port, err := freePort()
	if err != nil {
		s.crashed(sl, fmt.Errorf("find a free port: %w", err))
		return
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := s.start.start(s.spec.Argv, s.env(id, port))
	if err != nil {
		s.crashed(sl, fmt.Errorf("start worker %d: %w", id, err))
		return
	}
	sl.gen++
	sl.proc = p
	sl.started = time.Now()
	sl.w.SetProcess(p.Pid(), addr, sl.started)
	s.log.Info("worker started", "worker", id, "pid", p.Pid(), "addr", addr)

	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	opts := s.spec.Health
	opts.Log = s.log
	s.wg.Go(func() {
		defer close(done)
		health.Monitor(mctx, sl.w, addr, s.spec.Check, opts)
	})
	sl.stop = func() { cancel(); <-done }

	gen := sl.gen
	s.wg.Go(func() {
		st := p.Wait()
		s.send(func() { s.exited(sl, gen, st) })
	})
}

func (s *Supervisor) stopMonitor(sl *slot) {
	if sl.stop != nil {
		sl.stop()
		sl.stop = nil
	}
}

// exited handles the end of process generation gen of sl.
func (s *Supervisor) exited(sl *slot, gen int, st exitStatus) {
	if sl.gen != gen || sl.proc == nil {
		return
	}
	s.stopMonitor(sl)
	if sl.killer != nil {
		sl.killer.Stop()
		sl.killer = nil
	}
	pid := sl.proc.Pid()
	uptime := time.Since(sl.started)
	sl.proc = nil
	if sl.w.State() == pool.Stopped {
		sl.w.ClearProcess(pool.Stopped)
		s.log.Info("worker stopped", "worker", sl.w.ID(), "pid", pid, "status", st.String())
		return
	}
	sl.w.ClearProcess(pool.Down)
	s.log.Warn("worker exited", "worker", sl.w.ID(), "pid", pid, "status", st.String(), "uptime", uptime.Round(time.Millisecond))
	if uptime >= s.spec.Backoff.Reset {
		sl.crashes = 0
	}
	s.crashed(sl, nil)
}

// crashed schedules the next start of sl after its backoff delay.
func (s *Supervisor) crashed(sl *slot, err error) {
	sl.crashes++
	delay := s.spec.Backoff.Delay(sl.crashes)
	if err != nil {
		sl.w.ClearProcess(pool.Down)
		s.log.Error("worker failed to start", "worker", sl.w.ID(), "err", err)
	}
	s.log.Info("worker restarting", "worker", sl.w.ID(), "in", delay, "crashes_in_a_row", sl.crashes)
	sl.timer = time.AfterFunc(delay, func() {
		s.send(func() {
			if sl.w.State() == pool.Stopped {
				return
			}
			sl.timer = nil
			sl.w.AddRestart()
			s.spawn(sl)
		})
	})
}

// env is the worker's environment: the base without any PORT, WORKER_ID
// of the balancer's own, then the worker's.
func (s *Supervisor) env(id, port int) []string {
	env := slices.DeleteFunc(slices.Clone(s.spec.Env), func(kv string) bool {
		return strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "WORKER_ID=")
	})
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		// One process per core: a Go worker need not schedule on all.
		env = append(env, "GOMAXPROCS=1")
	}
	return append(env, "PORT="+strconv.Itoa(port), "WORKER_ID="+strconv.Itoa(id))
}

// freePort asks the kernel for a free loopback port. Another program may
// take it before the worker binds it; the worker then exits and is
// restarted on another port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
