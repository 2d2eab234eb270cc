package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

const (
	pathSimple   = "/operacion-simple"
	pathCompleja = "/operacion-compleja"
)

// endpoints are the course's two routes, by the short name the report uses.
var endpoints = []struct{ name, path string }{
	{"simple", pathSimple},
	{"compleja", pathCompleja},
}

// engines are the balancer's proxy engines, default first.
var engines = []string{"httputil", "fasthttp"}

// policies are the balancer's selection policies, default first.
var policies = []string{"round-robin", "least-conn", "p2c"}

// job is one measurement of a target, recorded under k.
type job struct {
	t     *target
	k     key
	path  string
	conns int
}

// progress numbers the runs of a scenario on the progress lines.
type progress struct {
	scen     string
	n, total int
}

func (p *progress) next() string {
	p.n++
	return fmt.Sprintf("[%s %*d/%d]", p.scen, len(strconv.Itoa(p.total)), p.n, p.total)
}

// runMatrix measures each group of jobs (one group per target) reps
// times, the groups and the jobs inside each group in the order of the
// repetition (see order). before, if not nil, runs ahead of each job.
func (b *bench) runMatrix(ctx context.Context, scen string, groups [][]job, before func(context.Context, job)) {
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	ru := b.newRunner(scen, total*b.opts.reps)
	for rep := range b.opts.reps {
		for _, g := range order(groups, rep) {
			// Inside a group too: scenario e's connection sweep would
			// otherwise take every c=64 sample right after c=8, and,
			// after the first repetition, in a process that has served
			// 512 connections in every case.
			for _, j := range order(g, rep) {
				if ctx.Err() != nil {
					return
				}
				if before != nil {
					before(ctx, j)
				}
				ru.run(ctx, rep, j)
			}
		}
	}
}

// runner measures jobs one after the other, numbering them on the
// progress lines. A process gets a short unrecorded warm-up before its
// first run: warmed per process, not per target, since a target that is
// restarted (scenario a's follow, scenario e's worker sweep) is a new
// process, as cold as at the start.
type runner struct {
	b    *bench
	pr   *progress
	warm map[instance]bool
}

type instance struct {
	t *target
	p *proc
}

func (b *bench) newRunner(scen string, total int) *runner {
	return &runner{b: b, pr: &progress{scen: scen, total: total}, warm: map[instance]bool{}}
}

func (ru *runner) run(ctx context.Context, rep int, j job) {
	if in := (instance{j.t, j.t.proc}); !ru.warm[in] && j.t.alive() == nil {
		ru.warm[in] = true
		ru.b.warmUp(ctx, j.t)
	}
	ru.b.measureWrk(ctx, ru.pr.next(), rep, j)
}

// warmUp loads t briefly on simple, unrecorded: JIT (Node), connection
// pools and the Go runtime's heap settle before the first figure.
func (b *bench) warmUp(ctx context.Context, t *target) {
	for _, w := range b.wrkRuns(t, pathSimple, 64, b.opts.warmup) {
		_, _ = runWrk(ctx, b.tools.wrk, w)
	}
}

// wrkRuns is what loads t: one wrk at its base URL, or for direct one
// wrk per worker, the connections split evenly.
func (b *bench) wrkRuns(t *target, path string, conns int, d time.Duration) []wrkRun {
	if !t.direct {
		return []wrkRun{{URL: t.base + path, Threads: 2, Conns: conns, Duration: d}}
	}
	var runs []wrkRun
	for _, addr := range t.workers {
		runs = append(runs, wrkRun{URL: "http://" + addr + path, Threads: 1, Conns: max(1, conns/len(t.workers)), Duration: d})
	}
	return runs
}

// measureWrk runs one job and records it. A target that is down records a
// failed sample, so the report says so instead of leaving a gap. The
// balancer's RSS is sampled during its runs on simple, at every number of
// connections: the goal reads it at 64, and scenario e's sweep shows what
// the other loads leave behind.
func (b *bench) measureWrk(ctx context.Context, label string, rep int, j job) {
	row := j.k.Target + paramLabel(j.k)
	if err := j.t.alive(); err != nil {
		b.res.add(j.k, sample{Err: err.Error()})
		b.progress(label, rep, row, "%-9s FAILED: %v", j.k.Endpoint, short(err))
		return
	}
	if b.tools.wrk == "" {
		b.res.add(j.k, sample{Err: "wrk is not installed"})
		return
	}
	idle := settle(ctx)
	var stopRSS chan struct{}
	var peak <-chan int64
	if j.t.rssPID > 0 && j.path == pathSimple {
		stopRSS = make(chan struct{})
		peak = sampleRSS(j.t.rssPID, stopRSS)
	}
	r, err := runWrkParallel(ctx, b.tools.wrk, b.wrkRuns(j.t, j.path, j.conns, runDuration(j.path, b.opts.duration, b.opts.quick)))
	var rss int64
	if stopRSS != nil {
		close(stopRSS)
		rss = <-peak
	}
	if ctx.Err() != nil {
		return // interrupted: not a failure of the target
	}
	if err == nil {
		err = j.t.alive() // it ran, but did the target survive it?
	}
	if err != nil {
		b.res.add(j.k, sample{Err: err.Error()})
		b.progress(label, rep, row, "%-9s FAILED: %v", j.k.Endpoint, short(err))
		return
	}
	s := sample{RPS: r.RPS, P99: r.P99, Requests: r.Requests, Errors: r.Errors(), Timeouts: r.Socket.Timeout, RSS: rss, Busy: !idle}
	b.res.add(j.k, s)
	extra := ""
	if rss > 0 {
		extra = fmt.Sprintf("  rss %s", fmtMiB(rss))
	}
	extra += b.checkRestarts(ctx, j.t, j.k)
	b.progress(label, rep, row, "%-9s c=%-3d %9.0f req/s  p99 %-9s errors %d%s",
		j.k.Endpoint, j.conns, r.RPS, fmtDur(r.P99), r.Errors(), extra)
}

// progress prints one line of the bench's progress: the scenario's
// counter, the repetition, and the row's name padded so that the figures
// after it line up.
func (b *bench) progress(label string, rep int, row, format string, a ...any) {
	fmt.Fprintf(b.out, "%s rep %d  %-28s %s\n", label, rep+1, row, fmt.Sprintf(format, a...))
}

// minComplejaRun is the shortest run on /operacion-compleja. At 64
// connections a worker shares its core among ~32 such requests at once,
// so they finish in bursts about a second apart, and wrk counts only the
// requests that finished: a 2 s run would measure where the bursts fell,
// not the throughput.
const minComplejaRun = 5 * time.Second

// runDuration is how long a wrk run on path lasts: on
// /operacion-compleja at least minComplejaRun, and in a full run at least
// twice wrkTimeout. wrk counts a request as timed out (an error) only once
// it has waited wrkTimeout while the run goes on, and leaves out of its
// figures the requests still waiting when the run ends: in a run no
// longer than the timeout no request could ever time out, and a
// connection starved for the whole run would show in no figure.
func runDuration(path string, d time.Duration, quick bool) time.Duration {
	switch {
	case path != pathCompleja:
		return d
	case quick:
		return max(d, minComplejaRun)
	}
	return max(d, 2*wrkTimeout)
}

// checkRestarts notes worker restarts that a balancer made during the
// run just measured, and returns them for the progress line. Under heavy
// load a worker can miss its health checks and be replaced: a cost the
// figures include, and one the reader should know about. For a target
// that loads another balancer's workers (t.host), that balancer's
// restarts are the ones that count.
func (b *bench) checkRestarts(ctx context.Context, t *target, k key) string {
	owner := t
	if t.host != nil {
		owner = t.host
	}
	if owner.stats == "" || owner.alive() != nil {
		return ""
	}
	_, n, err := workerState(ctx, owner)
	if err != nil || n <= owner.restarts {
		return ""
	}
	d := n - owner.restarts
	owner.restarts = n
	during := fmt.Sprintf("a run on %s%s", k.Endpoint, paramLabel(k))
	if owner != t {
		during = fmt.Sprintf("a run of %s on %s%s", t.name, k.Endpoint, paramLabel(k))
	}
	b.res.note(fmt.Sprintf("%s: %s restarted %d worker(s) during %s (see its health checks: a worker busy with queued requests can miss them)",
		k.Scenario, owner.name, d, during))
	return fmt.Sprintf("  worker restarts +%d", d)
}

func paramLabel(k key) string {
	switch k.Scenario {
	case "e-workers":
		return fmt.Sprintf(" workers=%d", k.Param)
	case "e-conc":
		return fmt.Sprintf(" c=%d", k.Param)
	}
	return ""
}

// short keeps an error on one progress line.
func short(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// noteFailures records in the report why a target did not start.
func (b *bench) noteFailures(scen string, ts ...*target) {
	for _, t := range ts {
		if t.err != nil {
			b.res.note(fmt.Sprintf("%s: %s did not start: %v", scen, t.name, t.err))
		}
	}
}

// pairs builds one group per target, one job per endpoint, at conns.
func pairs(scen string, conns int, ts ...*target) [][]job {
	var groups [][]job
	for _, t := range ts {
		var g []job
		for _, ep := range endpoints {
			g = append(g, job{t: t, k: key{Scenario: scen, Target: t.name, Endpoint: ep.name}, path: ep.path, conns: conns})
		}
		groups = append(groups, g)
	}
	return groups
}

// scenarioA: the balancer's two engines, nginx, haproxy and direct
// access, all in front of the same two worker processes: the httputil
// balancer (the host) starts them, and the fasthttp balancer
// (-local-workers=false), nginx and haproxy proxy to their addresses,
// read from the host's /stats.
//
// Both balancers get -health-timeout 5s. Here the host's workers also
// serve nginx, haproxy and direct, whose traffic the host never sees: a
// worker busy with their queued compleja requests misses its 1 s /health
// while answering none of the host's requests, which is what a hung
// worker looks like, and the host would replace it (the full run of
// 2026-11-26 did, five times). In real use the traffic goes through the
// balancer, which counts it and does not take a busy worker for a hung
// one. Should the host replace one all the same, the others follow it
// to the new address (see follow) and the report says so.
func (b *bench) scenarioA(ctx context.Context) {
	fmt.Fprintln(b.out, "== a: proxies over the same 2 workers, wrk -c64")
	slowHealth := []string{"-health-timeout", "5s"}
	host := b.startBalancer(ctx, "balancer-httputil", balancerOpts{engine: "httputil", workers: 2, extra: slowHealth})
	// over starts the targets that proxy to the host's workers at addrs.
	over := func(addrs []string) (fast, ngx, hap *target) {
		if len(addrs) == 0 {
			fast = &target{name: "balancer-fasthttp", err: errors.New("balancer-fasthttp: no workers to proxy to")}
		} else {
			fast = b.startBalancer(ctx, "balancer-fasthttp", balancerOpts{engine: "fasthttp", upstreams: addrs, extra: slowHealth})
		}
		ngx = b.startProxy(ctx, "nginx", addrs)
		hap = b.startProxy(ctx, "haproxy", addrs)
		fast.host, ngx.host, hap.host = host, host, host
		return fast, ngx, hap
	}
	fast, ngx, hap := over(host.workers)
	direct := &target{name: "direct", workers: host.workers, direct: true, host: host, err: host.err}
	defer func() { b.stopTargets(hap, ngx, fast, host) }()
	b.noteFailures("a", host, fast, ngx, hap)

	// Should the host replace a worker all the same, point the others at
	// the new addresses before their next run, and say so.
	proxied := host.workers
	follow := func(ctx context.Context, j job) {
		if j.t == host || host.alive() != nil {
			return
		}
		if up, _, err := workerState(ctx, host); err != nil || !slices.Equal(up, proxied) {
			up, err = waitStats(ctx, host.proc, host.stats, 2, 30*time.Second)
			if err == nil && !slices.Equal(up, proxied) {
				b.res.note(fmt.Sprintf("a: the host's workers moved from %v to %v before a run of %s; the fasthttp balancer, nginx and haproxy were restarted on the new addresses",
					proxied, up, j.t.name))
				b.stopTargets(fast, ngx, hap)
				f, n, h := over(up)
				*fast, *ngx, *hap = *f, *n, *h
				direct.workers, proxied = up, up
			}
		}
		if j.t == fast && fast.alive() == nil {
			// Its checks of the workers may have failed while another
			// target loaded them (its own requests did not show them
			// busy): it takes them back at the next check that passes.
			// Start its run with both up, as the others do.
			if _, err := waitStats(ctx, fast.proc, fast.stats, 2, 10*time.Second); err != nil {
				b.res.note(fmt.Sprintf("a: the fasthttp balancer did not have both upstreams up before a run (%v); that run may have gone to one worker", err))
			}
		}
	}
	b.runMatrix(ctx, "a", pairs("a", 64, host, fast, ngx, hap, direct), follow)
}

// scenarioB: the course's Express app under the balancer (-cmd node
// app.js) against Node's own cluster mode, one worker per core each, and
// under nginx and haproxy.
func (b *bench) scenarioB(ctx context.Context) {
	fmt.Fprintf(b.out, "== b: Express app, %d workers: balancer -cmd node vs Node cluster, wrk -c64\n", b.cores)
	node := b.tools.node
	if node == "" {
		node = "node"
	}
	cmd := node + " " + filepath.Join(b.root, "bench", "node", "app.js")
	var ts []*target
	for _, e := range engines {
		// The default health check for -cmd, an OPTIONS * that any answer
		// passes, as a user who gives no -health-path gets.
		ts = append(ts, b.startBalancer(ctx, "balancer-"+e, balancerOpts{engine: e, workers: b.cores, cmd: cmd}))
	}
	// The same with -policy least-conn, for comparison. A Node worker has
	// one thread: when the OS or its garbage collector pauses it, the
	// requests it holds wait. Round-robin passes over a worker holding more
	// than 1.25x its share of the requests in flight; least-conn sends each
	// request to the worker with the fewest. Node's cluster pins each
	// connection to one worker, so only that worker's share waits. The goals
	// stay on the default policy's rows.
	ts = append(ts, b.startBalancer(ctx, bLeastConn, balancerOpts{engine: "fasthttp", policy: "least-conn", workers: b.cores, cmd: cmd}))
	// And with a bound on the requests at each worker: a busy Node
	// process accepts one new connection per turn of its event loop (go
	// run ./bench/node/accept). Every row opens a new connection only once
	// the worker accepted the one before; the bound also keeps the
	// requests at each worker to a few at once.
	ts = append(ts, b.startBalancer(ctx, bMaxConns, balancerOpts{engine: "fasthttp", workers: b.cores, cmd: cmd, maxConns: bMaxConnsN}))
	// nginx and haproxy in front of Express processes of their own, as
	// in scenario a: the proxy hop that Node's cluster does not pay,
	// paid by the proxies the balancer is measured against there.
	for _, name := range []string{"nginx", "haproxy"} {
		ts = append(ts, b.startNodeProxy(ctx, name, b.cores))
	}
	ts = append(ts, b.startNodeCluster(ctx, b.cores))
	defer b.stopTargets(ts...)
	b.noteFailures("b", ts...)
	b.runMatrix(ctx, "b", pairs("b", 64, ts...), nil)
}

// scenarioC: the course's artillery runs, one process against the
// cluster (default engine, one worker per core).
func (b *bench) scenarioC(ctx context.Context) {
	fmt.Fprintf(b.out, "== c: artillery quick --count %d --num %d: one process vs the cluster\n", b.opts.artCount, b.opts.artNum)
	single := b.startBackend(ctx)
	cluster := b.startBalancer(ctx, "cluster", balancerOpts{workers: b.cores})
	ts := []*target{single, cluster}
	defer b.stopTargets(ts...)
	b.noteFailures("c", ts...)
	pr := &progress{scen: "c", total: b.opts.reps * len(ts) * len(endpoints)}
	for rep := range b.opts.reps {
		for _, t := range order(ts, rep) {
			for _, ep := range order(endpoints, rep) {
				if ctx.Err() != nil {
					return
				}
				k := key{Scenario: "c", Target: t.name, Endpoint: ep.name}
				label := pr.next()
				err := t.alive()
				if err == nil && b.tools.artillery == "" {
					err = fmt.Errorf("artillery is not installed")
				}
				var r artilleryResult
				idle := true
				if err == nil {
					idle = settle(ctx)
					r, err = runArtillery(ctx, b.tools.artillery, b.tmp, artilleryRun{URL: t.base + ep.path, Count: b.opts.artCount, Num: b.opts.artNum})
				}
				if err != nil {
					b.res.add(k, sample{Err: err.Error()})
					b.progress(label, rep, t.name, "%-9s FAILED: %v", ep.name, short(err))
					continue
				}
				p99 := time.Duration(r.P99 * float64(time.Millisecond))
				b.res.add(k, sample{RPS: r.Rate, P99: p99, Requests: r.Requests, Errors: r.Failed(), OK: r.Codes200, VUsersFailed: r.VUsersFailed, Busy: !idle})
				b.progress(label, rep, t.name, "%-9s 200s %d/%d  vusers.failed %d  p99 %s  errors %d%s",
					ep.name, r.Codes200, b.opts.artCount*b.opts.artNum, r.VUsersFailed, fmtDur(p99), r.Failed(),
					b.checkRestarts(ctx, t, k))
			}
		}
	}
}

// scenarioD: a mixed load per policy: one client looping on compleja
// (wrk -c1) while eight loop on simple (wrk -c8). What matters is how
// long simple waits behind compleja: its p99.
func (b *bench) scenarioD(ctx context.Context) {
	fmt.Fprintf(b.out, "== d: mixed load, %d workers: compleja -c1 + simple -c8, per policy\n", b.cores)
	var ts []*target
	for _, p := range policies {
		ts = append(ts, b.startBalancer(ctx, p, balancerOpts{policy: p, workers: b.cores}))
	}
	defer b.stopTargets(ts...)
	b.noteFailures("d", ts...)
	pr := &progress{scen: "d", total: b.opts.reps * len(ts)}
	for rep := range b.opts.reps {
		for _, t := range order(ts, rep) {
			if ctx.Err() != nil {
				return
			}
			label := pr.next()
			ks := key{Scenario: "d", Target: t.name, Endpoint: "simple"}
			kc := key{Scenario: "d", Target: t.name, Endpoint: "compleja"}
			err := t.alive()
			var rs, rc wrkResult
			idle := true
			if err == nil {
				idle = settle(ctx)
				var errS, errC error
				done := make(chan struct{})
				go func() {
					defer close(done)
					rc, errC = runWrk(ctx, b.tools.wrk, wrkRun{URL: t.base + pathCompleja, Threads: 1, Conns: 1, Duration: b.opts.duration})
				}()
				rs, errS = runWrk(ctx, b.tools.wrk, wrkRun{URL: t.base + pathSimple, Threads: 1, Conns: 8, Duration: b.opts.duration})
				<-done
				err = firstErr(errS, errC, t.alive())
			}
			if err != nil {
				b.res.add(ks, sample{Err: err.Error()})
				b.res.add(kc, sample{Err: err.Error()})
				b.progress(label, rep, t.name, "FAILED: %v", short(err))
				continue
			}
			b.res.add(ks, sample{RPS: rs.RPS, P99: rs.P99, P75: rs.P75, P90: rs.P90, Requests: rs.Requests, Errors: rs.Errors(), Timeouts: rs.Socket.Timeout, Busy: !idle})
			b.res.add(kc, sample{RPS: rc.RPS, P99: rc.P99, P75: rc.P75, P90: rc.P90, Requests: rc.Requests, Errors: rc.Errors(), Timeouts: rc.Socket.Timeout, Busy: !idle})
			b.progress(label, rep, t.name, "simple %7.0f req/s p75 %-9s p90 %-9s p99 %-9s | compleja %5.1f req/s p99 %-9s errors %d%s",
				rs.RPS, fmtDur(rs.P75), fmtDur(rs.P90), fmtDur(rs.P99), rc.RPS, fmtDur(rc.P99), rs.Errors()+rc.Errors(), b.checkRestarts(ctx, t, ks))
		}
	}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// eWorkers and eConns are scenario e's sweeps: 1..2×cores workers at 64
// connections, and connections at the default worker count.
func (b *bench) eWorkers() []int { return eWorkerCounts(b.cores) }

// eWorkerCounts is 1..2×cores.
func eWorkerCounts(cores int) []int {
	ns := make([]int, 2*cores)
	for i := range ns {
		ns[i] = i + 1
	}
	return ns
}

var eConns = []int{1, 8, 64, 256, 512}

// eWorkerSweep measures each engine with 1..2×cores workers. Each
// balancer runs only around its own run: started, warmed up, measured,
// stopped. Started all at once, the sweep's balancers and their workers
// (2·c(2c+1) worker processes on c cores: over a thousand on 16) would
// all run, health-checking, through every measurement, a background load
// that grows with the machine. The two engines at one worker count run
// back to back, in the order of the repetition, so that each pair is
// measured under the same conditions.
func (b *bench) eWorkerSweep(ctx context.Context) {
	ns := b.eWorkers()
	ru := b.newRunner("e-workers", b.opts.reps*len(ns)*len(engines))
	for rep := range b.opts.reps {
		for _, n := range order(ns, rep) {
			for _, e := range order(engines, rep) {
				if ctx.Err() != nil {
					return
				}
				t := b.startBalancer(ctx, fmt.Sprintf("%s-w%d", e, n), balancerOpts{engine: e, workers: n})
				b.noteFailures("e", t)
				ru.run(ctx, rep, job{t: t, k: key{Scenario: "e-workers", Target: e, Endpoint: "simple", Param: n}, path: pathSimple, conns: 64})
				b.stopTargets(t)
			}
		}
	}
}

// scenarioE: how throughput and p99 on simple grow with the number of
// workers and with concurrency, per engine.
func (b *bench) scenarioE(ctx context.Context) {
	fmt.Fprintf(b.out, "== e: scaling on simple: workers %v at c=64; connections %v at %d workers\n", b.eWorkers(), eConns, b.cores)
	b.eWorkerSweep(ctx)
	var ts []*target
	var cgroups [][]job
	for _, e := range engines {
		t := b.startBalancer(ctx, e+"-default", balancerOpts{engine: e, workers: b.cores})
		ts = append(ts, t)
		var g []job
		for _, c := range eConns {
			g = append(g, job{t: t, k: key{Scenario: "e-conc", Target: e, Endpoint: "simple", Param: c}, path: pathSimple, conns: c})
		}
		cgroups = append(cgroups, g)
	}
	defer b.stopTargets(ts...)
	b.noteFailures("e", ts...)
	b.runMatrix(ctx, "e-conc", cgroups, nil)
}
