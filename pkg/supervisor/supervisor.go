package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// MinUptime: a process that exits sooner was an unstable start.
	// After MaxRestarts restarts that follow unstable starts, in a row,
	// the next unstable start puts the worker in state backoff, restarted
	// at the longest backoff interval only (as PM2's max_restarts counts).
	// Zero MaxRestarts never does.
	MinUptime   time.Duration
	MaxRestarts int
	// StartTimeout bounds the time a new process has to pass its first
	// health check; past it, the process is killed and counted as a
	// crash (or, for a replacement, the old process keeps serving). Zero
	// means 30s.
	StartTimeout time.Duration
	// DrainTimeout bounds the wait for the in-flight requests of a
	// process being replaced or removed, before it gets SIGTERM. Zero
	// means 30s.
	DrainTimeout time.Duration
	// MaxRequests, if above 0, replaces a process after it served that
	// many requests plus a random 0..MaxRequestsJitter, so workers do
	// not all recycle at once.
	MaxRequests       int64
	MaxRequestsJitter int64
	// MaxMemory, if above 0, replaces a process whose resident memory
	// passes that many bytes.
	MaxMemory uint64
	// SampleInterval is the time between CPU and memory samples of each
	// worker; zero means 1s.
	SampleInterval time.Duration
	// Remote lists backends the supervisor does not start ("host:port"):
	// they join the pool after the local workers, are health-checked the
	// same way, and are never restarted, reloaded or scaled.
	Remote []string
	// Check is the active health check; Health its timing. Health.Log,
	// OnUp and OnDown are set by the supervisor.
	Check  health.Checker
	Health health.Options
	// Log receives one line per lifecycle event. Nil discards them.
	Log *slog.Logger
	// Output receives the workers' output, line by line. Nil means
	// TextOutput to the balancer's own stdout and stderr.
	Output Output
}

func (sp *Spec) fill() {
	if sp.Log == nil {
		sp.Log = slog.New(slog.DiscardHandler)
	}
	if sp.Env == nil {
		sp.Env = os.Environ()
	}
	if sp.Output == nil {
		sp.Output = TextOutput(os.Stdout, os.Stderr)
	}
	if sp.StartTimeout <= 0 {
		sp.StartTimeout = 30 * time.Second
	}
	if sp.DrainTimeout <= 0 {
		sp.DrainTimeout = 30 * time.Second
	}
	if sp.SampleInterval <= 0 {
		sp.SampleInterval = time.Second
	}
}

// Command returns the Argv for a worker command line given by the user.
// It runs under /bin/sh, so quoting, $PORT and other shell syntax work. A
// simple command is exec'ed by the shell, so the program itself is the
// worker process (its pid, CPU and memory are the ones reported);
// "NAME=value prog" goes through env(1) for that, since exec takes no
// assignments. A command line with control operators (;, &&, |, ...)
// keeps the shell as the worker; signals reach its children anyway, as
// they go to the whole process group. A command line that starts with
// exec already is left as it is ("exec exec prog" would look for a
// program named exec), and so is one that starts with a word of the
// shell's own, which exec would look for as a program ("exit 3" would
// end with 127, exec: exit: not found).
func Command(cmdline string) []string {
	switch {
	case strings.ContainsAny(cmdline, ";&|()`\n<>") || strings.Contains(cmdline, "$("):
		return []string{"/bin/sh", "-c", cmdline}
	case firstWord(cmdline) == "exec" || shellWords[firstWord(cmdline)]:
		return []string{"/bin/sh", "-c", cmdline}
	case leadingAssignment(cmdline):
		return []string{"/bin/sh", "-c", "exec env " + cmdline}
	default:
		return []string{"/bin/sh", "-c", "exec " + cmdline}
	}
}

// shellWords are the POSIX shell's special built-ins, the built-ins that
// act on the shell itself, and its reserved words: none of them is a
// program that exec could run.
var shellWords = map[string]bool{
	":": true, ".": true, "break": true, "continue": true, "eval": true, "exit": true,
	"export": true, "readonly": true, "return": true, "set": true, "shift": true,
	"times": true, "trap": true, "unset": true, "cd": true, "umask": true, "ulimit": true,
	"wait": true, "alias": true, "unalias": true, "command": true, "read": true,
	"if": true, "for": true, "while": true, "until": true, "case": true, "{": true, "!": true,
}

// firstWord returns the command line's first blank-separated word.
func firstWord(cmdline string) string {
	word, _, _ := strings.Cut(strings.TrimLeft(cmdline, " \t"), " ")
	word, _, _ = strings.Cut(word, "\t")
	return word
}

// leadingAssignment reports whether the command line starts with a
// NAME=value word.
func leadingAssignment(cmdline string) bool {
	name, _, ok := strings.Cut(firstWord(cmdline), "=")
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
// once; the control methods (Reload, Scale, RestartWorker) may be called
// from any goroutine while it runs.
type Supervisor struct {
	start starter
	pool  *pool.Pool

	events chan func()   // run by the loop goroutine, which owns the fields below
	quit   chan struct{} // closed when the loop has ended
	wg     sync.WaitGroup
	op     sync.Mutex // one control operation at a time

	spec     Spec
	specGen  int        // which spec a process was started with: each Configure gives a new one
	gens     int        // the last number Configure gave
	prior    *priorSpec // the spec before the last Configure, for Revert
	log      *slog.Logger
	slots    map[int]*slot
	procs    map[*proc]*slot // every live process, current, starting or draining
	stopping bool
	hurry    bool // Hurry was called: the stop kills at once
	// lingering are the process groups of stopped workers whose leader
	// exited before the rest of the group (a shell before its program):
	// they get the rest of the grace period, then SIGKILL.
	lingering map[*proc]struct{}
}

// slot is one WORKER_ID. Only the loop goroutine touches it.
type slot struct {
	remote   bool // a backend we do not start: cur has no process
	w        *pool.Worker
	cur      *proc // the process serving the slot, or nil while it restarts
	next     *proc // a replacement getting ready, or nil
	crashes  int   // in a row, for the backoff delay
	unstable int   // exits before MinUptime in a row
	timer    *time.Timer
	removing bool
	replaced []chan error // told when next takes over, or fails to
	upWait   []chan error // told when cur is first up (after Scale)

	// Replacements that failed in a row, and the time before which a
	// recycle (max_requests, max_memory) starts no other: one that cannot
	// start waits out the backoff delay, as a crash's restart does,
	// instead of being tried again at every check.
	replaceFails int
	recycleAt    time.Time
}

// priorSpec is a spec that was in force, with its number.
type priorSpec struct {
	spec Spec
	gen  int
}

// proc is one process and what the supervisor keeps for it.
type proc struct {
	p           process
	h           *pool.Process
	staging     *pool.Worker // health target of a replacement until it takes over
	stopMonitor func()
	limit       int64 // MaxRequests for this process, with jitter; 0 = none
	startTimer  *time.Timer
	killer      *time.Timer
	terminating bool
	termAt      time.Time              // when it was sent SIGTERM
	upAt        time.Time              // when it first passed its checks; zero before
	lastCheck   atomic.Pointer[string] // the last failed check while it started, for the log
	hinted      bool                   // hintListen found its listeners; only pr's monitor reads it
	lookedAt    time.Time              // hintListen's last look
	specGen     int                    // Supervisor.specGen when it was started
	// spec is the one it was started with: its drain, stop and grace
	// go by it, as a Configure since (a reload, or its undo) may have
	// put a health check or timings there that do not fit it.
	spec Spec
}

// New returns a supervisor that adds its workers to p.
func New(spec Spec, p *pool.Pool) *Supervisor {
	return newSupervisor(spec, p, nil)
}

func newSupervisor(spec Spec, p *pool.Pool, st starter) *Supervisor {
	spec.fill()
	return &Supervisor{
		spec:   spec,
		pool:   p,
		start:  st,
		log:    spec.Log,
		events: make(chan func(), 64),
		quit:   make(chan struct{}),
		slots:  make(map[int]*slot),
		procs:  make(map[*proc]*slot),

		lingering: make(map[*proc]struct{}),
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
		st := newOSStarter(s.spec.Output)
		defer st.close()
		s.start = st
	}
	for id := 1; id <= n; id++ {
		s.addSlot(id)
	}
	for i, addr := range s.spec.Remote {
		s.addRemote(pool.MaxWorkers+1+i, addr)
	}
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	interval := s.spec.SampleInterval
	s.wg.Go(func() { s.sample(sampleCtx, interval) })
	recycle := time.NewTicker(100 * time.Millisecond)
	defer recycle.Stop()
	for {
		select {
		case fn := <-s.events:
			fn()
		case <-recycle.C:
			s.checkRecycle()
		case <-ctx.Done():
			stopSampling()
			s.stopAll()
			close(s.quit)
			s.wg.Wait()
			return nil
		}
	}
}

// send hands fn to the loop goroutine; after the loop ended, fn is dropped.
func (s *Supervisor) send(fn func()) { s.sendUnless(nil, fn) }

// sendUnless is send that also gives up, dropping fn, once stop is closed
// (a nil stop never is).
func (s *Supervisor) sendUnless(stop <-chan struct{}, fn func()) {
	select {
	case s.events <- fn:
	case <-s.quit:
	case <-stop:
	}
}

// call runs fn on the loop goroutine and waits for it. Once the
// supervisor is stopping, fn is not run and call returns ErrStopped: an
// operation queued before the stop (a signal's scale-up or reload) must
// not start processes that nothing would stop.
func (s *Supervisor) call(ctx context.Context, fn func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan bool, 1)
	select {
	case s.events <- func() {
		if !s.stopping {
			fn()
		}
		done <- !s.stopping
	}:
	case <-s.quit:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case ran := <-done:
		if !ran {
			return ErrStopped
		}
		return nil
	case <-s.quit:
		return ErrStopped
	}
}

func (s *Supervisor) addSlot(id int, upWait ...chan error) *slot {
	sl := &slot{w: pool.NewWorker(id), upWait: upWait}
	s.slots[id] = sl
	s.pool.Add(sl.w)
	s.spawn(sl, false)
	return sl
}

// addRemote adds a backend that runs elsewhere: only its health is ours
// to watch.
func (s *Supervisor) addRemote(id int, addr string) {
	sl := &slot{remote: true, w: pool.NewRemoteWorker(id, addr)}
	sl.cur = &proc{h: sl.w.Process(), spec: s.spec}
	s.slots[id] = sl
	s.pool.Add(sl.w)
	s.log.Info("remote upstream added", "worker", id, "addr", addr)
	s.monitor(sl, sl.cur, sl.w)
}

// spawn starts a process for sl: as its current process, or as the
// replacement that takes over once up.
func (s *Supervisor) spawn(sl *slot, replacement bool) {
	id := sl.w.ID()
	port, err := freePort()
	if err != nil {
		s.startFailed(sl, replacement, fmt.Errorf("find a free port: %w", err))
		return
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := s.start.start(id, s.spec.Argv, s.env(id, port))
	if err != nil {
		s.startFailed(sl, replacement, fmt.Errorf("start worker %d: %w", id, err))
		return
	}
	pr := &proc{p: p, h: pool.NewProcess(p.Pid(), addr, time.Now()), specGen: s.specGen, spec: s.spec}
	if s.spec.MaxRequests > 0 {
		pr.limit = s.spec.MaxRequests
		if s.spec.MaxRequestsJitter > 0 {
			pr.limit += rand.Int64N(s.spec.MaxRequestsJitter + 1)
		}
	}
	s.procs[pr] = sl
	target := sl.w
	if replacement {
		sl.next = pr
		pr.staging = pool.NewWorker(id)
		pr.staging.SetProcess(pr.h, pool.Starting)
		target = pr.staging
		s.log.Info("worker replacement started", "worker", id, "pid", p.Pid(), "addr", addr)
	} else {
		sl.cur = pr
		sl.w.SetProcess(pr.h, pool.Starting)
		s.log.Info("worker started", "worker", id, "pid", p.Pid(), "addr", addr)
	}
	s.monitor(sl, pr, target)
	pr.startTimer = time.AfterFunc(s.spec.StartTimeout, func() {
		s.send(func() { s.startTimedOut(sl, pr) })
	})
	s.wg.Go(func() {
		st := p.Wait()
		s.send(func() { s.exited(sl, pr, st) })
	})
}

// monitor runs the health checks of pr against target (the pool's worker,
// or a replacement's staging worker).
func (s *Supervisor) monitor(sl *slot, pr *proc, target *pool.Worker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	opts := s.spec.Health
	opts.Log = s.log
	// The loop may be waiting in stopMonitor for this monitor to end,
	// with the events channel full: a send then gives up on ctx, or the
	// two would wait for each other.
	opts.OnUp = func(*pool.Worker) { s.sendUnless(ctx.Done(), func() { s.up(sl, pr) }) }
	opts.OnDown = func(*pool.Worker) { s.sendUnless(ctx.Done(), func() { s.failing(sl, pr) }) }
	opts.Progress = pr.h.Requests
	opts.Starting = func(err error) {
		msg := err.Error()
		pr.lastCheck.Store(&msg)
		s.hintListen(sl.w.ID(), pr, err)
	}
	check := s.spec.Check // read here: the loop owns s.spec, and Configure replaces it
	s.wg.Go(func() {
		defer close(done)
		health.Monitor(ctx, target, pr.h.Addr(), check, opts)
	})
	pr.stopMonitor = func() { cancel(); <-done }
}

func (s *Supervisor) stopMonitor(pr *proc) {
	if pr.stopMonitor != nil {
		pr.stopMonitor()
		pr.stopMonitor = nil
	}
}

// up: pr passed its health checks.
func (s *Supervisor) up(sl *slot, pr *proc) {
	if pr.terminating || s.stopping {
		// Queued by its monitor before the process was stopped (by
		// start_timeout, a drain, the balancer's stop): too late.
		return
	}
	if pr.upAt.IsZero() {
		pr.upAt = time.Now()
	}
	if pr.startTimer != nil {
		pr.startTimer.Stop()
		pr.startTimer = nil
	}
	switch pr {
	case sl.next:
		s.takeOver(sl, pr)
	case sl.cur:
		tell(&sl.upWait, nil)
	}
}

// takeOver moves the slot's traffic to the replacement pr, and drains
// the process it replaces.
func (s *Supervisor) takeOver(sl *slot, pr *proc) {
	s.stopMonitor(pr)
	old := sl.cur
	sl.next, sl.cur = nil, pr
	pr.staging = nil
	sl.replaceFails = 0
	if sl.removing {
		s.terminate(pr)
		return
	}
	if old != nil {
		// Its monitor moves sl.w's state: a failed check of the old
		// process that it acted on after the line below would mark the
		// new one down. (drain stops it too; once stopped, that is a
		// no-op.)
		s.stopMonitor(old)
	}
	sl.w.SetProcess(pr.h, pool.Up)
	sl.w.AddRestart()
	s.monitor(sl, pr, sl.w)
	s.log.Info("worker replaced", "worker", sl.w.ID(), "pid", pr.h.Pid(), "addr", pr.h.Addr())
	if old != nil {
		s.drain(old)
	}
	tell(&sl.replaced, nil)
}

// failing: pr failed its health checks fall times while its process runs.
// A hung worker gets no new requests already; stop it so it is replaced,
// and its stuck requests fail over.
func (s *Supervisor) failing(sl *slot, pr *proc) {
	if pr != sl.cur || pr.terminating || s.stopping || sl.remote {
		return
	}
	s.log.Warn("worker not answering its health checks; replacing it", "worker", sl.w.ID(), "pid", pr.h.Pid())
	s.terminate(pr)
}

func (s *Supervisor) startTimedOut(sl *slot, pr *proc) {
	if _, live := s.procs[pr]; !live || pr.terminating || pr.startTimer == nil {
		return
	}
	pr.startTimer = nil
	attrs := []any{"worker", sl.w.ID(), "pid", pr.h.Pid(), "start_timeout", s.spec.StartTimeout}
	if msg := pr.lastCheck.Load(); msg != nil {
		attrs = append(attrs, "last_check", *msg)
	}
	s.log.Warn("worker did not come up in time", attrs...)
	s.terminate(pr)
}

// drain stops sending requests to pr (it is no longer current), waits for
// its in-flight requests or DrainTimeout, then terminates it. A process
// that hangs while it drains (its checks fail, and it finishes no request
// in between) is terminated after Fall such checks, so that its requests
// fail over then, not at DrainTimeout.
func (s *Supervisor) drain(pr *proc) {
	s.stopMonitor(pr)
	pr.terminating = true // no restart when it exits
	deadline := time.Now().Add(pr.spec.DrainTimeout)
	hung := drainWatch{check: pr.spec.Check, o: pr.spec.Health, pr: pr.h}
	s.wg.Go(func() {
		ctx, cancel := context.WithCancel(context.Background()) // ends the checks when the loop ends
		defer cancel()
		go func() {
			select {
			case <-s.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for pr.h.InFlight() > 0 && time.Now().Before(deadline) {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if hung.observe(ctx) {
				s.log.Warn("draining worker not answering its health checks; stopping it", "pid", pr.h.Pid(), "addr", pr.h.Addr(), "in_flight", pr.h.InFlight())
				pr.h.MarkDown() // its requests fail over now, not when it is gone
				break
			}
		}
		s.send(func() { s.terminate(pr) })
	})
}

// drainWatch checks a draining process every Interval: Fall failed checks
// in a row, with no request finished between them, mean it hangs.
type drainWatch struct {
	check    health.Checker
	o        health.Options
	pr       *pool.Process
	next     time.Time
	fails    health.Counter // counts the failures; Rise 1, so a pass starts afresh
	progress int64
}

// observe runs a check when one is due and reports whether the process
// hangs.
func (d *drainWatch) observe(ctx context.Context) bool {
	if d.check == nil {
		return false
	}
	interval, timeout := d.o.Interval, d.o.Timeout
	if interval <= 0 {
		interval = time.Second
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	now := time.Now()
	if d.next.IsZero() {
		d.next, d.progress = now.Add(interval), d.pr.Requests()
		d.fails = health.Counter{Rise: 1, Fall: d.o.Fall}
		return false
	}
	if now.Before(d.next) {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := d.check.Check(cctx, d.pr.Addr())
	cancel()
	n := d.pr.Requests()
	hung := err != nil && n == d.progress && ctx.Err() == nil
	d.progress = n
	d.next = time.Now().Add(interval)
	return d.fails.Observe(!hung) == health.Fail
}

// terminate sends SIGTERM (after SIGCONT, so a stopped process gets it),
// and SIGKILL if the process outlives the grace period.
func (s *Supervisor) terminate(pr *proc) {
	if _, live := s.procs[pr]; !live || pr.killer != nil {
		return
	}
	pr.terminating = true
	pr.termAt = time.Now()
	s.stopMonitor(pr)
	pr.p.Signal(syscall.SIGCONT)
	if err := pr.p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("signal worker", "pid", pr.h.Pid(), "err", err)
	}
	pr.killer = time.AfterFunc(pr.spec.Grace, func() {
		s.send(func() {
			if _, live := s.procs[pr]; live {
				s.log.Warn("worker did not stop in time; killing it", "pid", pr.h.Pid(), "grace", pr.spec.Grace)
				pr.p.Signal(syscall.SIGKILL)
			}
		})
	})
}

// exited handles the end of process pr of slot sl.
func (s *Supervisor) exited(sl *slot, pr *proc, st exitStatus) {
	delete(s.procs, pr)
	// What the worker started lives on in its process group (a shell's
	// "cd app && node app.js", a program's own children), still holding
	// its port or its output. A worker being stopped gave them SIGTERM
	// with its own, and they get the rest of its grace period to finish
	// (a shell exits at once, its program takes its time); otherwise the
	// worker is gone, so they go at once, as a container's processes do
	// when its main one exits. The group's id stays taken while any
	// member lives, so the signal reaches no other process.
	if pr.terminating && !s.hurry {
		s.linger(pr)
	} else {
		pr.p.Signal(syscall.SIGKILL)
	}
	s.stopMonitor(pr)
	for _, t := range []*time.Timer{pr.killer, pr.startTimer} {
		if t != nil {
			t.Stop()
		}
	}
	id, pid := sl.w.ID(), pr.h.Pid()
	uptime := time.Since(pr.h.Started())
	switch {
	case pr == sl.next:
		sl.next = nil
		if sl.removing {
			// Stopped by the worker's removal, which tells sl.replaced.
			s.log.Info("worker replacement stopped", "worker", id, "pid", pid, "status", st.String())
			break
		}
		err := fmt.Errorf("replacement of worker %d exited before it was up: %s", id, st)
		s.log.Warn("worker replacement failed; the old process keeps serving", "worker", id, "pid", pid, "status", st.String())
		s.replaceFailed(sl, err)
		if sl.cur == nil && !s.stopping && !sl.removing && sl.timer == nil {
			s.crashed(sl, 0) // the old process died meanwhile: restart as usual
		}
	case pr == sl.cur:
		sl.cur = nil
		if s.stopping || sl.removing {
			sl.w.ClearProcess(pool.Stopped)
			s.log.Info("worker stopped", "worker", id, "pid", pid, "status", st.String())
			break
		}
		tell(&sl.upWait, fmt.Errorf("worker %d exited before it was up: %s", id, st))
		s.log.Warn("worker exited", "worker", id, "pid", pid, "status", st.String(), "uptime", uptime.Round(time.Millisecond))
		if sl.next != nil {
			// A replacement is on its way: it takes the slot when up.
			sl.w.ClearProcess(pool.Down)
			break
		}
		// What counts for the backoff is the time it served: one that
		// never came up (stopped by start_timeout, or exited) crashed
		// at once, however long it ran.
		var served time.Duration
		if !pr.upAt.IsZero() {
			served = time.Since(pr.upAt)
		}
		s.crashed(sl, served)
	default:
		s.log.Info("worker stopped", "worker", id, "pid", pid, "status", st.String())
	}
	if sl.removing && sl.cur == nil && sl.next == nil && !s.hasProcs(sl) {
		s.removeSlot(sl)
	}
}

func (s *Supervisor) hasProcs(sl *slot) bool {
	for _, o := range s.procs {
		if o == sl {
			return true
		}
	}
	return false
}

// crashed schedules the next start of sl after its backoff delay; its
// process had served for uptime (0 if it never came up).
func (s *Supervisor) crashed(sl *slot, uptime time.Duration) {
	if uptime >= s.spec.Backoff.Reset {
		sl.crashes = 0
	}
	if uptime < s.spec.MinUptime {
		sl.unstable++
	} else {
		sl.unstable = 0
	}
	sl.crashes++
	delay := s.spec.Backoff.Delay(sl.crashes)
	state := pool.Down
	if s.spec.MaxRestarts > 0 && sl.unstable > s.spec.MaxRestarts {
		state, delay = pool.Backoff, s.spec.Backoff.Max
	}
	sl.w.ClearProcess(state)
	s.log.Info("worker restarting", "worker", sl.w.ID(), "in", delay, "crashes_in_a_row", sl.crashes, "state", state.String())
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.send(func() {
			// Not a timer stopped or replaced since: its send may have
			// waited behind a restart and a new crash's own timer.
			if sl.timer != t || s.stopping || sl.removing || sl.cur != nil {
				return
			}
			sl.timer = nil
			sl.w.AddRestart()
			s.spawn(sl, false)
		})
	})
	sl.timer = t
}

// startFailed handles a process that could not even be started.
func (s *Supervisor) startFailed(sl *slot, replacement bool, err error) {
	s.log.Error("worker failed to start", "worker", sl.w.ID(), "err", err)
	if replacement {
		s.replaceFailed(sl, err)
		if sl.cur != nil {
			return
		}
	} else {
		tell(&sl.upWait, err)
	}
	s.crashed(sl, 0)
}

// tell sends err (nil for success) to every channel waiting in *waiters,
// and forgets them.
func tell(waiters *[]chan error, err error) {
	for _, ch := range *waiters {
		ch <- err
	}
	*waiters = nil
}

// replaceFailed tells the waiters of sl's replacement that it failed
// with err, and holds back the slot's next recycle by the backoff delay.
func (s *Supervisor) replaceFailed(sl *slot, err error) {
	tell(&sl.replaced, err)
	sl.replaceFails++
	sl.recycleAt = time.Now().Add(s.spec.Backoff.Delay(sl.replaceFails))
}

// replace starts a replacement for sl's process; done (if not nil) is
// told when it took over or failed. A replacement already starting is
// kept if it runs the current spec; one started before the last
// Configure is stopped and another started, so that a reload never
// counts a process with the old settings as replaced. A slot whose
// process is dead is restarted at once instead, unless a replacement is
// on its way, which then takes the slot when up.
func (s *Supervisor) replace(sl *slot, done chan error) {
	if sl.next != nil && sl.next.specGen != s.specGen {
		old := sl.next
		sl.next = nil
		s.log.Info("worker replacement stopped: started with the settings before the reload", "worker", sl.w.ID(), "pid", old.h.Pid())
		s.terminate(old)
	}
	if sl.cur == nil && sl.next != nil {
		if done != nil {
			sl.replaced = append(sl.replaced, done)
		}
		return
	}
	if sl.cur == nil {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
		sl.crashes, sl.unstable = 0, 0
		sl.w.AddRestart()
		if done != nil {
			sl.upWait = append(sl.upWait, done) // before spawn, which tells a failure at once
		}
		s.spawn(sl, false)
		return
	}
	if done != nil {
		sl.replaced = append(sl.replaced, done)
	}
	if sl.next == nil {
		s.spawn(sl, true)
	}
}

// checkRecycle replaces processes past MaxRequests or MaxMemory.
func (s *Supervisor) checkRecycle() {
	if s.stopping || (s.spec.MaxRequests <= 0 && s.spec.MaxMemory == 0) {
		return
	}
	for _, sl := range s.slots {
		pr := sl.cur
		if pr == nil || sl.remote || sl.next != nil || sl.removing || pr.terminating || sl.w.State() != pool.Up {
			continue
		}
		if time.Now().Before(sl.recycleAt) {
			continue // its last replacement failed: wait as a restart would
		}
		if pr.limit > 0 && pr.h.Requests() >= pr.limit {
			s.log.Info("worker recycled", "worker", sl.w.ID(), "pid", pr.h.Pid(), "reason", "max_requests", "requests", pr.h.Requests())
			s.replace(sl, nil)
			continue
		}
		if _, rss := pr.h.Usage(); s.spec.MaxMemory > 0 && rss > s.spec.MaxMemory {
			s.log.Info("worker recycled", "worker", sl.w.ID(), "pid", pr.h.Pid(), "reason", "max_memory", "rss_bytes", rss)
			s.replace(sl, nil)
		}
	}
}

// stopAll stops every worker and runs the loop until all have exited.
func (s *Supervisor) stopAll() {
	s.stopping = true
	for _, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
		sl.w.SetState(pool.Stopped)
		if sl.remote {
			s.stopMonitor(sl.cur)
		}
	}
	for pr := range s.procs {
		s.terminate(pr)
	}
	if s.hurry {
		s.killAll()
	}
	for len(s.procs) > 0 || len(s.lingering) > 0 {
		fn := <-s.events
		fn()
	}
	for _, sl := range s.slots {
		for _, ch := range append(sl.replaced, sl.upWait...) {
			ch <- ErrStopped
		}
	}
}

// linger gives what is left of stopped process pr's group the rest of
// its grace period, then kills it. The stop waits for it.
func (s *Supervisor) linger(pr *proc) {
	if pr.p.Signal(0) != nil {
		return // the group is empty: the usual case
	}
	s.lingering[pr] = struct{}{}
	deadline := pr.termAt.Add(pr.spec.Grace)
	// kill(-pgid, 0) is cheap, but a zombie answers it too: every tenth
	// look, the group is also looked for in /proc, where zombies show.
	gr, _ := pr.p.(interface{ groupRuns() bool })
	s.wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for i := 1; time.Now().Before(deadline) && pr.p.Signal(0) == nil; i++ {
			if gr != nil && i%10 == 0 && !gr.groupRuns() {
				break
			}
			select {
			case <-t.C:
			case <-s.quit:
				return // the stop was cut short (Hurry): killed already
			}
		}
		s.send(func() {
			if _, ok := s.lingering[pr]; !ok {
				return // Hurry killed it
			}
			delete(s.lingering, pr)
			if pr.p.Signal(0) == nil && (gr == nil || gr.groupRuns()) {
				s.log.Warn("what a stopped worker started did not stop in time; killing it", "pid", pr.h.Pid(), "grace", pr.spec.Grace)
				pr.p.Signal(syscall.SIGKILL)
			}
		})
	})
}

// Hurry cuts the stop's grace period short: once Run's context is done,
// the workers still running get SIGKILL at once instead of after Grace
// (a second stop signal). Before that it only marks the stop to come.
func (s *Supervisor) Hurry() {
	s.send(func() {
		s.hurry = true
		if s.stopping {
			s.killAll()
		}
	})
}

func (s *Supervisor) killAll() {
	for pr := range s.procs {
		pr.p.Signal(syscall.SIGKILL)
	}
	for pr := range s.lingering {
		pr.p.Signal(syscall.SIGKILL)
		delete(s.lingering, pr)
	}
}

// removeSlot drops a drained slot from the pool.
func (s *Supervisor) removeSlot(sl *slot) {
	delete(s.slots, sl.w.ID())
	s.pool.Remove(sl.w.ID())
	s.log.Info("worker removed", "worker", sl.w.ID())
	tell(&sl.replaced, nil)
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
