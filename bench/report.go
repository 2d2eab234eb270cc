package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// report turns the results into docs/bench: README.md, the PNG plots and
// results.json (every repetition, for a later look).
type report struct {
	res   *results
	mach  machine
	opts  options
	cores int
}

func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	plots := r.plots(dir)
	var md strings.Builder
	r.markdown(&md, plots)
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	return r.res.save(filepath.Join(dir, "results.json"))
}

// plots draws what there are figures for and returns the files written
// by name; a plot that fails is noted and left out.
func (r *report) plots(dir string) map[string]string {
	files := map[string]string{}
	try := func(name string, draw func(string) (bool, error)) {
		path := filepath.Join(dir, name)
		ok, err := draw(path)
		if err != nil {
			r.res.note(fmt.Sprintf("plot %s: %v", name, err))
			return
		}
		if ok {
			files[name] = name
		} else {
			os.Remove(path) // a stale one from an earlier run would mislead
		}
	}
	if r.opts.only["a"] {
		try("a_simple.png", func(p string) (bool, error) { return plotScenarioA(r.res, p) })
	}
	if r.opts.only["e"] {
		try("e_workers.png", func(p string) (bool, error) {
			return plotSweep(r.res, "e-workers", "workers", false, p)
		})
		try("e_connections.png", func(p string) (bool, error) {
			return plotSweep(r.res, "e-conc", "connections", true, p)
		})
	}
	return files
}

func (r *report) markdown(w io.Writer, plots map[string]string) {
	res := r.res
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# Benchmarks\n\n")
	p("Measured %s by `go run ./bench%s`: ", r.runIdentity(), r.flagsUsed())
	p("%d repetition(s) of %s per wrk run; every figure is the median over the repetitions, errors the total. ", res.Reps, res.Duration)
	p("Generated file: rerun the bench rather than edit it; after a change to the bench's text, `go run ./bench -render docs/bench/results.json` writes it again from the same figures. ")
	p("Every repetition's figures are in [results.json](results.json).\n\n")
	if res.Quick {
		p("> **Quick mode**: one short repetition per figure, to check the bench end to end. ")
		p("The figures are indicative only; the goals below are judged on them all the same. ")
		p("A full run (`go run ./bench`, about 40 minutes) replaces this file.\n\n")
	}

	p("## Machine\n\n| | |\n|---|---|\n")
	p("| CPU | %s |\n| cores | %d |\n", r.mach.CPU, r.mach.Cores)
	if r.mach.Kernel != "" {
		p("| kernel | Linux %s |\n", r.mach.Kernel)
	}
	for _, name := range []string{"go", "nginx", "haproxy", "node", "wrk", "artillery"} {
		if v, ok := r.mach.Versions[name]; ok {
			p("| %s | %s |\n", name, v)
		}
	}
	p("\nThe load generator (wrk or Artillery), the proxy and the workers all share these %d cores, ", r.mach.Cores)
	p("so a figure is the whole machine's, not the proxy's alone: a proxy that spends less CPU leaves more to the workers and to wrk.\n\n")

	p("## How to rerun\n\n```sh\n")
	p("go run ./bench                 # the full run: 3 × 10 s per figure, about 40 minutes\n")
	p("go run ./bench -quick          # one short pass, to try it\n")
	p("go run ./bench -only a,b -reps 5 -duration 20s\n")
	p("go run ./bench -render docs/bench/results.json   # this page again from its figures, measuring nothing\n")
	p("```\n\n")
	p("It installs what is missing (`apt-get install -y wrk nginx-light haproxy` as root, with a temporary `/usr/sbin/policy-rc.d` that keeps Debian from starting the packages' nginx and haproxy services; ")
	p("for Artillery the `artillery` on PATH if there is one, else artillery@%s installed with npm into `bench/.cache/`%s; ", artilleryVersion, r.artilleryUsed())
	p("`npm ci` in `bench/node`), builds `./balancer` and `./backend` into a temporary directory, runs everything on 127.0.0.1 ")
	p("and stops every process it started. ")
	if res.Order == "mirrored" {
		p("In each repetition the targets take turns, and so do each target's runs, in an order rotated every second repetition and reversed in the odd ones ")
		p("(A B C, C B A, B C A, A C B, ...), so that no target always runs first or always follows the same one. ")
	} else {
		p("In each repetition of this run the targets took turns in a rotated order (A B C, then B C A, ...), and each target's runs kept one order (simple before compleja, connections 1 to 512): the bench of that time. ")
	}
	p("In scenarios a, b and e, each process under test gets an unrecorded warm-up (%s of wrk at 64 connections on /operacion-simple) before its first measured run, and again if it is restarted; ", warmupFor(res.Quick))
	p("c (Artillery) and d (mixed load) have none, so their first repetition is cold for every target alike. ")
	p("Before every measured run the bench waits until /proc/stat shows the CPUs less than %.0f%% busy over %s, ", settleBusy*100, settleWindow)
	p("because wrk stops with up to 64 requests still in the workers, which on /operacion-compleja are about a second of work that would otherwise slow the next target's run; ")
	p("after %s it gives up and runs all the same, and results.json marks that run (`busy_start`). %s ", settleMax, r.busyCount())
	d := wrkSeconds(res.Duration)
	p("wrk runs as `wrk -t2 -c64 -d%ds --timeout 10s --latency URL` against the targets of a and b and the balancers of e's worker sweep", d)
	switch cr := res.ComplejaRun; {
	case cr > res.Duration && cr >= 2*wrkTimeout:
		p(" (-d%ds on /operacion-compleja: wrk counts a request as timed out only once it has waited 10 s while the run goes on, and leaves out the requests still waiting at the end, so a run no longer than the timeout could show neither a timeout nor a starved connection)", wrkSeconds(cr))
	case cr > res.Duration:
		p(" (-d%ds on /operacion-compleja, where 64 requests share the workers' cores and finish in bursts about a second apart; too short for wrk to see a timeout)", wrkSeconds(cr))
	case cr == 0 && res.Duration < minComplejaRun:
		p(" (at least -d%ds on /operacion-compleja, where 64 requests share the workers' cores and finish in bursts about a second apart)", int(minComplejaRun.Seconds()))
	}
	p("; against **direct** as two `wrk -t1 -c32` at once, one per worker; in e's connection sweep as `wrk -t2 -cN -d%ds` for N = %s (`-t1` for N = 1); ", d, joinInts(eConns))
	p("in d as `wrk -t1 -c1 -d%ds` on /operacion-compleja next to `wrk -t1 -c8 -d%ds` on /operacion-simple; all with `--timeout 10s --latency`. ", d, d)
	p("The timeout is raised from wrk's 2 s because /operacion-compleja at 64 connections on %d cores queues for longer than that, ", r.mach.Cores)
	p("and wrk would count the queueing as socket errors and leave those requests out of its latency figures. ")
	p("The p99 of a wrk run is wrk's, and wrk (4.x) corrects its latency figures for coordinated omission: for each answer that took at least twice the run's mean time between two requests of one connection, ")
	p("it adds made-up samples one such interval shorter, and shorter again, down to that interval, standing for the requests the connection would have sent meanwhile. ")
	p("So a stall weighs on p99 by its length rather than by how many requests it held: a worker stopped for 8 s under 32 connections gave wrk a p99 of 5 s, ")
	p("where, in a run of the same kind, a client that records every request saw 20 of 198 000 take more than a second and a p99 of 6.4 ms ([tuning.md](tuning.md)). ")
	p("Every target's p99 is corrected the same way, so they compare with each other, not with latencies measured otherwise.\n\n")

	p("## Goals\n\n")
	p("Each repetition runs every target once, so its own ratio of two targets' req/s is measured under the same load from the rest of the machine, ")
	p("whose capacity drifts by tens of percent over a run. A throughput goal is judged on the median of those per-repetition ratios ")
	p("(and, where the goal says so, on the median p99 too); \"per repetition\" gives their lowest and highest, and how many reached the goal's ratio, to show how near the line the verdict is, ")
	p("and \"medians\" the two targets' median req/s and their ratio, which compares figures from different minutes of the run. ")
	p("A goal is not met when the measured side had errors (wrk's socket errors or non-2xx answers, summed over the repetitions), when the reference had errors other than timeouts, or when either had a failed repetition, ")
	p("since wrk counts an error answered at once as a request per second like any other; \"errors\" gives both sides' counts. ")
	p("A reference's timeouts (requests slower than 10 s, which Node's cluster has on compleja) make it no faster, so they are shown but do not void the comparison")
	if !res.TimeoutsRecorded {
		p(" (this run's file does not tell them from other errors, so there every error of either side voids it)")
	}
	p(".\n\n")
	p("| goal | wanted | measured | |\n|---|---|---|---|\n")
	gs := evalGoals(res)
	for _, g := range gs {
		p("| %s | %s | %s | %s |\n", g.Name, g.Want, g.Got, metWord(g.Met))
	}
	p("\n")
	if bgs := boundGoals(res); bgs != nil {
		p("Not goals, since the goals are read on the default settings: the same two lines of scenario b on the row with `-worker-max-conns %d`, which the Node guide suggests for a Node app under bursts of slow requests:\n\n", bMaxConnsN)
		p("| with the bound | wanted | measured | |\n|---|---|---|---|\n")
		for _, g := range bgs {
			p("| %s | %s | %s | %s |\n", g.Name, g.Want, g.Got, metWord(g.Met))
		}
		p("\n")
	}
	if pgs := peerGoals(res); pgs != nil {
		p("Not goals either: the same two lines for nginx and haproxy, each in front of Express processes of its own, in the same run: what the proxy hop costs a proxy that is not the balancer:\n\n")
		p("| another proxy | wanted | measured | |\n|---|---|---|---|\n")
		for _, g := range pgs {
			p("| %s | %s | %s | %s |\n", g.Name, g.Want, g.Got, metWord(g.Met))
		}
		p("\n")
	}
	// Why a goal is missed is not in these figures: the profiles and
	// by-hand measurements that explain it are in tuning.md, written by
	// hand, so the report links there instead of guessing.
	var missed []goal
	for _, g := range gs {
		if !g.Met {
			missed = append(missed, g)
		}
	}
	if len(missed) > 0 {
		p("For the goals not met in this run, what is known of why (from profiles and measurements made by hand, not from these figures) is in [tuning.md](%s):\n\n", tuningWhy)
		for _, g := range missed {
			p("- %s: [where the time goes now](%s)\n", g.Name, tuningWhy)
		}
		p("\n")
	}

	if r.opts.only["a"] {
		r.sectionA(w, plots)
	}
	if r.opts.only["b"] {
		r.sectionB(w)
	}
	if r.opts.only["c"] {
		r.sectionC(w)
	}
	if r.opts.only["d"] {
		r.sectionD(w)
	}
	if r.opts.only["e"] {
		r.sectionE(w, plots)
	}
	r.sectionRSS(w)

	if len(res.Notes) > 0 || r.failures() != nil || r.busyRuns() != nil {
		p("## What did not run\n\n")
		for _, n := range res.Notes {
			p("- %s\n", oneLine(n))
		}
		for _, f := range r.failures() {
			p("- %s\n", f)
		}
		for _, f := range r.busyRuns() {
			p("- %s\n", f)
		}
		p("\n")
	}
}

// artilleryUsed says which Artillery this run used, as far as its
// results.json recorded it.
func (r *report) artilleryUsed() string {
	if !r.opts.only["c"] {
		return ""
	}
	v, ok := r.mach.Versions["artillery"]
	if !ok {
		return " (this run found none)"
	}
	if r.mach.ArtilleryFrom == "" {
		return fmt.Sprintf(" (this run: %s; where from was not recorded)", v)
	}
	return fmt.Sprintf(" (this run: %s, %s)", v, r.mach.ArtilleryFrom)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// balancerThreads says how many threads the balancer's Go code ran on.
func (r *report) balancerThreads() string {
	if n := r.res.GoMaxProcs; n > 0 {
		return fmt.Sprintf("GOMAXPROCS %d (the Go runtime's default, one per CPU it may use; %d CPUs here)", n, r.mach.Cores)
	}
	return fmt.Sprintf("the Go runtime's default GOMAXPROCS, one per CPU (%d here)", r.mach.Cores)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// runIdentity says when the run was and which code it measured, as far as
// its results.json recorded them.
func (r *report) runIdentity() string {
	res := r.res
	const layout = "2006-01-02 15:04 MST"
	s := "on " + res.Started.UTC().Format(layout)
	if !res.Ended.IsZero() {
		end := res.Ended.UTC().Format(layout)
		if res.Ended.UTC().Format("2006-01-02") == res.Started.UTC().Format("2006-01-02") {
			end = res.Ended.UTC().Format("15:04 MST")
		}
		s = fmt.Sprintf("from %s to %s", res.Started.UTC().Format(layout), end)
	}
	switch {
	case res.Commit == "":
		s += " (the commit measured was not recorded)"
	case res.Dirty:
		s += fmt.Sprintf(" on commit `%s` with changes not committed", shortCommit(res.Commit))
	default:
		s += fmt.Sprintf(" on commit `%s`", shortCommit(res.Commit))
	}
	return s
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// busyCount says how many of the measured runs started on busy CPUs.
func (r *report) busyCount() string {
	if !r.res.BusyRecorded {
		return "(This results.json was written before the bench recorded it.)"
	}
	var busy, all int
	for _, s := range r.res.Series {
		for _, smp := range s.Samples {
			if smp.Err != "" {
				continue
			}
			all++
			if smp.Busy {
				busy++
			}
		}
	}
	if busy == 0 {
		return fmt.Sprintf("In this run none of the %d measurements did.", all)
	}
	return fmt.Sprintf("In this run **%d of the %d measurements** did (listed under \"What did not run\").", busy, all)
}

// busyRuns lists the series with runs that started on busy CPUs.
func (r *report) busyRuns() []string {
	var out []string
	for _, s := range r.res.Series {
		n := 0
		for _, smp := range s.Samples {
			if smp.Err == "" && smp.Busy {
				n++
			}
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("%s: %d of %d repetitions started before the CPUs were idle (the wait gave up after %s)", seriesName(s.key), n, len(s.Samples), settleMax))
		}
	}
	return out
}

func seriesName(k key) string {
	line := fmt.Sprintf("%s %s %s", k.Scenario, k.Target, k.Endpoint)
	if k.Param != 0 {
		line += fmt.Sprintf(" (%d)", k.Param)
	}
	return line
}

func (r *report) flagsUsed() string {
	var f []string
	if r.opts.quick {
		f = append(f, "-quick")
	}
	// -reps and -duration where they differ from the mode's defaults, so
	// that the command shown is the one that was run.
	reps, dur := defaultReps, defaultDuration
	if r.opts.quick {
		reps, dur = quickReps, quickDuration
	}
	if r.opts.reps != reps {
		f = append(f, fmt.Sprintf("-reps %d", r.opts.reps))
	}
	if r.opts.duration != dur {
		f = append(f, "-duration "+r.opts.duration.String())
	}
	if r.opts.proxyThreads > 1 {
		f = append(f, fmt.Sprintf("-proxy-threads %d", r.opts.proxyThreads))
	}
	if len(r.opts.only) < len(scenarioNames) {
		var s []string
		for _, n := range scenarioNames {
			if r.opts.only[n] {
				s = append(s, n)
			}
		}
		f = append(f, "-only "+strings.Join(s, ","))
	}
	if len(f) == 0 {
		return ""
	}
	return " " + strings.Join(f, " ")
}

// failures lists the series that have failed repetitions, once each.
func (r *report) failures() []string {
	var out []string
	for _, s := range r.res.Series {
		sm := s.summary()
		if sm.Failed == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %d of %d repetitions failed: %s", seriesName(s.key), sm.Failed, len(s.Samples), oneLine(sm.Err)))
	}
	return out
}

// tuningWhy is the section of docs/bench/tuning.md that discusses where
// the balancer's time and memory go, and so why a goal can be missed.
const tuningWhy = "tuning.md#where-the-time-goes-now"

func metWord(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// cell helpers: "–" stands for no figure.
func rpsCell(s summary) string {
	if !s.OK {
		return "failed"
	}
	return fmtRPS(s.RPS)
}

func p99Cell(s summary) string { return durCell(s, s.P99) }

// durCell is d, one of s's latencies, or a dash where s was not measured
// or has none of it.
func durCell(s summary, d time.Duration) string {
	if !s.OK || d == 0 {
		return "–"
	}
	return fmtDur(d)
}

func errCell(s summary) string {
	if !s.OK {
		return "–"
	}
	return fmt.Sprint(s.Errors)
}

func ratioCell(a, b summary) string {
	if !a.OK || !b.OK {
		return "–"
	}
	if v, ok := ratio(a.RPS, b.RPS); ok {
		return fmtRatio(v)
	}
	return "–"
}

func p99RatioCell(a, b summary) string {
	if !a.OK || !b.OK || b.P99 <= 0 {
		return "–"
	}
	return fmtRatio(float64(a.P99) / float64(b.P99))
}

// bLeastConn is scenario b's fasthttp balancer with -policy least-conn.
const bLeastConn = "balancer-fasthttp-least-conn"

// bMaxConns is scenario b's fasthttp balancer with -worker-max-conns
// bMaxConnsN.
const (
	bMaxConns  = "balancer-fasthttp-max-conns-8"
	bMaxConnsN = 8
)

// bTargets are scenario b's rows, the reference last.
var bTargets = []string{"balancer-httputil", "balancer-fasthttp", bLeastConn, bMaxConns, "nginx", "haproxy", "node-cluster"}

// bRows are the rows of bTargets that res measured: a file written
// before a row was added has none of it.
func bRows(res *results) []string {
	var out []string
	for _, t := range bTargets {
		for _, s := range res.Series {
			if s.Scenario == "b" && s.Target == t {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

var aTargets = []string{"balancer-httputil", "balancer-fasthttp", "nginx", "haproxy", "direct"}

func (r *report) sectionA(w io.Writer, plots map[string]string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## a. The balancer against nginx, haproxy and direct access\n\n")
	p("One balancer (`-engine httputil -workers 2`) hosts two workers of the built-in backend. The fasthttp balancer ")
	th := max(1, r.opts.proxyThreads)
	p("(`-engine fasthttp -local-workers=false -upstream A -upstream B`, no workers of its own), nginx (`worker_processes %d`, upstream keepalive 64, %s%s", th, keepaliveRequests(r.res.NginxKeepaliveRequests), upstreamIdle(r.res.NginxUpstreamIdle))
	p("HTTP/1.1 to the upstreams, no access log) and haproxy (`nbthread %d`, `http-reuse always`, `option http-keep-alive`) proxy to those same ", th)
	p("two processes, their addresses read from the host's /stats. **direct** is two wrk at once, 32 connections each, one per worker: throughput summed, the higher p99. ")
	p("So all five targets share the same two worker processes. 64 connections in all. ")
	p("Threads: nginx and haproxy %s; each balancer runs with %s; each worker with one (the balancer gives its workers GOMAXPROCS=1). ", plural(th, "thread (worker process) each", "threads (worker processes) each"), r.balancerThreads())
	if th == 1 {
		p("The goal's reference is nginx with one worker, as in the table of the project's issue (\"nginx, 1 worker, upstream keepalive\"), so on /operacion-simple, where the proxy is the bottleneck, the ratio sets the balancer's threads against nginx's one; ")
		p("the more cores the machine has, the more that favours the balancer (`-proxy-threads N` gives nginx and haproxy N each). ")
	}
	p("Both balancers run with `-health-timeout 5s` (default 1 s): the workers also serve nginx, haproxy and direct, whose traffic the balancers never see, ")
	p("so a worker busy with their queued /operacion-compleja requests would miss its /health while answering none of the balancer's requests, which is what a hung worker looks like. ")
	p("(In real use the traffic goes through the balancer, which counts it: busy is not hung.) ")
	p("Should the host replace a worker all the same, its new port would be unknown to the others: the bench then restarts the fasthttp balancer, nginx and haproxy ")
	p("on the new addresses, points direct at them, and says so below.\n\n")
	for _, ep := range endpoints {
		nginx := r.res.get(key{Scenario: "a", Target: "nginx", Endpoint: ep.name})
		direct := r.res.get(key{Scenario: "a", Target: "direct", Endpoint: ep.name})
		p("### %s\n\n| target | req/s | × nginx | × direct | p99 | p99 × nginx | errors |\n|---|--:|--:|--:|--:|--:|--:|\n", ep.path)
		for _, t := range aTargets {
			s := r.res.get(key{Scenario: "a", Target: t, Endpoint: ep.name})
			p("| %s | %s | %s | %s | %s | %s | %s |\n", t, rpsCell(s), ratioCell(s, nginx), ratioCell(s, direct), p99Cell(s), p99RatioCell(s, nginx), errCell(s))
		}
		p("\n")
	}
	if f, ok := plots["a_simple.png"]; ok {
		p("![requests per second on /operacion-simple](%s)\n\n", f)
	}
}

func (r *report) sectionB(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## b. The Express app: the balancer with `-cmd node` against Node's cluster mode\n\n")
	p("`bench/node/app.js` (Express 4) with %d workers: under the balancer as `-cmd \"node bench/node/app.js\"`, per engine, with the default health check for `-cmd`, ", r.cores)
	p("an `OPTIONS *` that any answer within health_timeout (1 s) passes, ")
	p("and under Node's own cluster mode (`node bench/node/cluster.js`, CLUSTER_WORKERS=%d). wrk at 64 connections. ", r.cores)
	p("The balancer rows use the default policy, round-robin, except **%s** (`-engine fasthttp -policy least-conn`), for comparison: ", bLeastConn)
	p("a Node worker has one thread, and the requests that reach it while the OS or its garbage collector pauses it wait. ")
	p("Round-robin gives each worker its turn but passes over one that holds more than 1.25× its share of the requests in flight; least-conn sends each request to the worker with the fewest. ")
	p("(Node's cluster pins each connection to one worker, so only that worker's connections wait.) ")
	if slices.Contains(bRows(r.res), bMaxConns) {
		p("**%s** is the fasthttp engine with `-worker-max-conns %d`: at most %d requests at each worker at once, the rest waiting in the balancer in the order they came, ", bMaxConns, bMaxConnsN, bMaxConnsN)
		p("since a busy Node process accepts one new connection per turn of its event loop, each turn running a request of every connection it has, so a burst of new connections to it waits for seconds (see [tuning.md](tuning.md)). ")
		p("Every row, this one too, opens a new connection to a worker only once the worker has accepted the one before (the kernel's count of the connections a listener has not accepted yet), which keeps such a burst from forming; the bound also caps the requests a worker works on at once. ")
	}
	if rows := bRows(r.res); slices.Contains(rows, "nginx") || slices.Contains(rows, "haproxy") {
		p("**nginx** and **haproxy**, set as in scenario a, each proxy to %d `node bench/node/app.js` processes of their own (PORT and WORKER_ID set as the balancer sets them): ", r.cores)
		p("the proxy hop that Node's cluster does not pay, paid by the two proxies that scenario a measures the balancer against. ")
	}
	p("The goals are read on the default settings' rows.\n\n")
	p("| target | endpoint | req/s | × Node cluster | p99 | p99 × Node cluster | errors |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, ep := range endpoints {
		ref := r.res.get(key{Scenario: "b", Target: "node-cluster", Endpoint: ep.name})
		for _, t := range bRows(r.res) {
			s := r.res.get(key{Scenario: "b", Target: t, Endpoint: ep.name})
			p("| %s | %s | %s | %s | %s | %s | %s |\n", t, ep.name, rpsCell(s), ratioCell(s, ref), p99Cell(s), p99RatioCell(s, ref), errCell(s))
		}
	}
	p("\n")
}

func (r *report) sectionC(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	n := r.opts.artCount * r.opts.artNum
	p("## c. The course's Artillery runs: one process against the cluster\n\n")
	p("`artillery quick --count %d --num %d URL` (%d requests per run): **one-process** is `backend` alone (one Go process, all cores), ", r.opts.artCount, r.opts.artNum, n)
	p("**cluster** the balancer (default engine) with %d workers. Figures from Artillery's JSON report: `http.codes.200` and `vusers.failed` summed over the repetitions, ", r.cores)
	p("`http.response_time` p99 and `http.request_rate` as medians.\n\n")
	p("| target | endpoint | 200s | of | vusers.failed | errors | p99 | p99 × one process | req/s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, ep := range endpoints {
		ref := r.res.get(key{Scenario: "c", Target: "one-process", Endpoint: ep.name})
		for _, t := range []string{"one-process", "cluster"} {
			s := r.res.get(key{Scenario: "c", Target: t, Endpoint: ep.name})
			if !s.OK {
				p("| %s | %s | failed | | | | | | |\n", t, ep.name)
				continue
			}
			p("| %s | %s | %d | %d | %d | %d | %s | %s | %s |\n", t, ep.name, s.OKCount, n*s.Runs, s.VUsersFailed, s.Errors,
				fmtDur(s.P99), p99RatioCell(s, ref), fmtRPS(s.RPS))
		}
	}
	p("\n")
}

func (r *report) sectionD(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## d. Mixed load, per policy\n\n")
	p("%d workers; for the length of a run, one client loops on /operacion-compleja (`wrk -t1 -c1`) while eight loop on /operacion-simple (`wrk -t1 -c8`). ", r.cores)
	p("The figure that matters is simple's p99: how long a cheap request waits behind an expensive one on the same worker.")
	rr := r.res.get(key{Scenario: "d", Target: "round-robin", Endpoint: "simple"})
	// Runs from before the bench kept them have no p75 and p90.
	spread := false
	for _, pol := range policies {
		spread = spread || r.res.get(key{Scenario: "d", Target: pol, Endpoint: "simple"}).P90 > 0
	}
	cols := []string{"simple p99", "× round-robin", "simple req/s", "compleja req/s", "compleja p99", "errors"}
	if spread {
		p(" Its p75 and p90 show the spread below it.")
		cols = append([]string{"simple p75", "simple p90"}, cols...)
	}
	p("\n\n| policy | %s |\n|---|%s\n", strings.Join(cols, " | "), strings.Repeat("--:|", len(cols)))
	for _, pol := range policies {
		s := r.res.get(key{Scenario: "d", Target: pol, Endpoint: "simple"})
		c := r.res.get(key{Scenario: "d", Target: pol, Endpoint: "compleja"})
		errs := "–"
		if s.OK && c.OK {
			errs = fmt.Sprint(s.Errors + c.Errors)
		}
		p("| %s | ", pol)
		if spread {
			p("%s | %s | ", durCell(s, s.P75), durCell(s, s.P90))
		}
		p("%s | %s | %s | %s | %s | %s |\n", p99Cell(s), p99RatioCell(s, rr), rpsCell(s), rpsCell(c), p99Cell(c), errs)
	}
	p("\n")
}

func (r *report) sectionE(w io.Writer, plots map[string]string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## e. How the cost grows\n\n")
	p("/operacion-simple through the balancer, per engine: against the number of workers at 64 connections, ")
	p("and against the number of connections with %d workers (one per core). ", r.cores)
	if r.res.WorkerSweepPerRun {
		p("In the worker sweep each balancer runs only for its own run (started, warmed up, measured, stopped), the two engines at one worker count back to back; ")
	} else {
		p("In this run's worker sweep every balancer of the sweep, %d in all with their workers, was started at once and ran through all of the sweep's measurements (the bench of that time); ", 2*len(eWorkerCounts(r.cores)))
	}
	p("the connection sweep runs in one balancer process per engine.\n\n")
	sweep := func(scen, col string, params []int, plot string) {
		p("| %s | httputil req/s | httputil p99 | fasthttp req/s | fasthttp p99 | errors |\n|--:|--:|--:|--:|--:|--:|\n", col)
		for _, n := range params {
			h := r.res.get(key{Scenario: scen, Target: "httputil", Endpoint: "simple", Param: n})
			f := r.res.get(key{Scenario: scen, Target: "fasthttp", Endpoint: "simple", Param: n})
			var errs []string
			for _, s := range []summary{h, f} {
				if s.OK {
					errs = append(errs, fmt.Sprint(s.Errors))
				} else {
					errs = append(errs, "–")
				}
			}
			p("| %d | %s | %s | %s | %s | %s |\n", n, rpsCell(h), p99Cell(h), rpsCell(f), p99Cell(f), strings.Join(errs, " / "))
		}
		p("\n")
		if f, ok := plots[plot]; ok {
			p("![%s](%s)\n\n", plot, f)
		}
	}
	sweep("e-workers", "workers", eWorkerCounts(r.cores), "e_workers.png")
	sweep("e-conc", "connections", eConns, "e_connections.png")
}

func (r *report) sectionRSS(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## The balancer's memory\n\n")
	p("Peak VmRSS of the balancer process itself (not its workers), read from /proc/PID/status every 200 ms during its runs on simple; the median of the peaks. ")
	p("The goal is judged as it is stated, on the balancer at 64 connections: in scenario a, where it never serves more than 64 connections (in scenario e when a did not run).\n\n")
	p("| engine | RSS | from |\n|---|--:|---|\n")
	for _, e := range engines {
		rss, src := balancerRSS(r.res, e)
		v := "–"
		if rss > 0 {
			v = fmtMiB(rss)
		}
		p("| %s | %s | %s |\n", e, v, src)
	}
	p("\n")
	if r.opts.only["e"] {
		r.rssSweep(w)
	}
}

// rssSweep shows the balancer's RSS at each load of scenario e's
// connection sweep, and what a burst of 512 connections leaves behind at
// 64: one process serves the whole sweep, every repetition, so only the
// first repetition's run at 64 (the sweep runs 1 → 512 in repetition 0,
// see order) comes before any larger load.
func (r *report) rssSweep(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	get := func(e string, c int) *series {
		k := key{Scenario: "e-conc", Target: e, Endpoint: "simple", Param: c}
		for _, s := range r.res.Series {
			if s.key == k {
				return s
			}
		}
		return &series{key: k}
	}
	mib := func(v int64) string {
		if v <= 0 {
			return "–"
		}
		return fmtMiB(v)
	}
	p("In scenario e's connection sweep (%d workers, one balancer process per engine for the whole sweep), the same peak at each number of connections, median and highest over the repetitions (– where none was recorded):\n\n", r.cores)
	p("| connections | httputil median | httputil max | fasthttp median | fasthttp max |\n|--:|--:|--:|--:|--:|\n")
	for _, c := range eConns {
		h, f := get("httputil", c).summary(), get("fasthttp", c).summary()
		p("| %d | %s | %s | %s | %s |\n", c, mib(h.RSS), mib(h.RSSMax), mib(f.RSS), mib(f.RSSMax))
	}
	p("\n")
	var said bool
	for _, e := range engines {
		smp := get(e, 64).Samples
		if len(smp) < 2 || smp[0].Err != "" || smp[0].RSS <= 0 {
			continue
		}
		var later []float64
		var top int64
		for _, s := range smp[1:] {
			if s.Err == "" && s.RSS > 0 {
				later = append(later, float64(s.RSS))
				top = max(top, s.RSS)
			}
		}
		if len(later) == 0 {
			continue
		}
		p("The %s balancer's first run at 64 connections, before it had served more than 64, peaked at %s; its %d later ones, each in the same process after its runs at 512 connections, at %s (median; highest %s). ",
			e, fmtMiB(smp[0].RSS), len(later), fmtMiB(int64(median(later))), fmtMiB(top))
		said = true
	}
	if said {
		p("A process that has served 512 connections holds more at 64: Go and fasthttp keep the memory of the burst's connections ")
		p("(idle worker goroutines, pooled buffers, heap not yet returned to the OS) for minutes. ")
		p("Scenario a's figure is that of a balancer that has never seen such a burst.\n\n")
	}
}

// printRatios writes the goals and the headline ratios to the terminal.
func (r *report) printRatios(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	res := r.res
	line := func(label string, a, b summary) {
		if v, ok := ratio(a.RPS, b.RPS); ok && a.OK && b.OK {
			p("  %-56s %s  (%s vs %s req/s; p99 %s vs %s)\n", label, fmtRatio(v), fmtRPS(a.RPS), fmtRPS(b.RPS), fmtDur(a.P99), fmtDur(b.P99))
		} else {
			p("  %-56s –  (%s)\n", label, firstNonEmpty(a.Err, b.Err))
		}
	}
	get := func(scen, t, ep string) summary { return res.get(key{Scenario: scen, Target: t, Endpoint: ep}) }
	p("Ratios of the medians (the goals below are judged on the per-repetition ratios):\n")
	if r.opts.only["a"] {
		for _, ep := range endpoints {
			for _, t := range []string{"balancer-httputil", "balancer-fasthttp", "haproxy", "direct"} {
				line(fmt.Sprintf("a %s %s / nginx", ep.name, t), get("a", t, ep.name), get("a", "nginx", ep.name))
			}
		}
		for _, t := range []string{"balancer-httputil", "balancer-fasthttp", "nginx", "haproxy"} {
			line(fmt.Sprintf("a compleja %s / direct", t), get("a", t, "compleja"), get("a", "direct", "compleja"))
		}
	}
	if r.opts.only["b"] {
		for _, ep := range endpoints {
			for _, t := range bRows(res) {
				if t == "node-cluster" {
					continue
				}
				line(fmt.Sprintf("b %s %s / node-cluster", ep.name, t), get("b", t, ep.name), get("b", "node-cluster", ep.name))
			}
		}
	}
	if r.opts.only["c"] {
		for _, ep := range endpoints {
			c, one := get("c", "cluster", ep.name), get("c", "one-process", ep.name)
			if c.OK && one.OK && one.P99 > 0 {
				p("  %-56s %s  (p99 %s vs %s; %d vs %d 200s)\n", "c "+ep.name+" cluster / one-process p99",
					fmtRatio(float64(c.P99)/float64(one.P99)), fmtDur(c.P99), fmtDur(one.P99), c.OKCount, one.OKCount)
			}
		}
	}
	if r.opts.only["d"] {
		rr := get("d", "round-robin", "simple")
		for _, pol := range policies[1:] {
			s := get("d", pol, "simple")
			if s.OK && rr.OK && rr.P99 > 0 {
				p("  %-56s %s  (p99 %s vs %s)\n", "d simple p99 "+pol+" / round-robin",
					fmtRatio(float64(s.P99)/float64(rr.P99)), fmtDur(s.P99), fmtDur(rr.P99))
			}
		}
	}
	if r.opts.only["e"] {
		line("e simple c=64 fasthttp / httputil",
			res.get(key{Scenario: "e-conc", Target: "fasthttp", Endpoint: "simple", Param: 64}),
			res.get(key{Scenario: "e-conc", Target: "httputil", Endpoint: "simple", Param: 64}))
	}
	p("\nGoals:\n")
	gs := evalGoals(res)
	met := 0
	for _, g := range gs {
		if g.Met {
			met++
		}
		p("  %-9s %-48s %s\n", strings.Trim(metWord(g.Met), "*"), g.Name, g.Got)
	}
	p("%d of %d goals met.\n", met, len(gs))
	if bgs := boundGoals(res); bgs != nil {
		p("Not goals (-worker-max-conns %d):\n", bMaxConnsN)
		for _, g := range bgs {
			p("  %-9s %-48s %s\n", strings.Trim(metWord(g.Met), "*"), g.Name, g.Got)
		}
	}
	if pgs := peerGoals(res); pgs != nil {
		p("Not goals (the same lines for other proxies):\n")
		for _, g := range pgs {
			p("  %-9s %-48s %s\n", strings.Trim(metWord(g.Met), "*"), g.Name, g.Got)
		}
	}
}

func firstNonEmpty(ss ...string) string {
	if i := slices.IndexFunc(ss, func(s string) bool { return s != "" }); i >= 0 {
		return oneLine(ss[i])
	}
	return "no figure"
}

// keepaliveRequests says nginx's keepalive_requests as the report's
// list of its settings takes it: nothing for nginx's default.
func keepaliveRequests(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("`keepalive_requests %d` to the clients and the upstreams, ", n)
}

// upstreamIdle says nginx's keepalive_timeout to the upstreams as the
// report's list of its settings takes it: nothing for nginx's default.
func upstreamIdle(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("idle upstream connections closed after %v (`keepalive_timeout`, as the balancer does: below the 5 s after which Node closes them), ", d)
}
