// Command bench measures the balancer against nginx, haproxy, direct
// access to the workers and Node's cluster mode, on this machine, and
// writes docs/bench/README.md with tables, plots and the goals.
//
//	go run ./bench                 # the full run: 3 repetitions of 10s each
//	go run ./bench -quick          # 1 short repetition, to try it
//	go run ./bench -only a,e       # some scenarios only
//	go run ./bench -render docs/bench/results.json   # the report again, from a run's figures
//
// It installs what is missing (wrk, nginx-light and haproxy with apt-get
// as root; Artillery with npm into bench/.cache; the Node app's modules
// with npm ci), builds the balancer and the backend into a temporary
// directory, and stops every process it started, by pid, on every way
// out, Ctrl-C included. All traffic goes to 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// scenarioNames are the values -only accepts, in the order they run.
var scenarioNames = []string{"a", "b", "c", "d", "e"}

// The repetitions and wrk duration of a run, and of a -quick one.
const (
	defaultReps, quickReps         = 3, 1
	defaultDuration, quickDuration = 10 * time.Second, 2 * time.Second
)

// warmupFor is the unrecorded warm-up a process gets before its first
// measured run, in a full run or a quick one.
func warmupFor(quick bool) time.Duration {
	if quick {
		return time.Second
	}
	return 2 * time.Second
}

// options are the command-line settings.
type options struct {
	quick    bool
	reps     int
	duration time.Duration
	out      string
	only     map[string]bool
	// artillery's --count and --num: the course's 40 × 50, fewer in quick mode.
	artCount, artNum int
	warmup           time.Duration
	// proxyThreads is nginx's worker_processes and haproxy's nbthread.
	proxyThreads int
	// render, when set, is a results.json to write the report from,
	// measuring nothing.
	render string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var only string
	fs.BoolVar(&o.quick, "quick", false, "short runs and 1 repetition, to try the bench (figures are only indicative)")
	fs.IntVar(&o.reps, "reps", defaultReps, "repetitions of each measurement; the report shows medians")
	fs.DurationVar(&o.duration, "duration", defaultDuration, "wrk duration per run (whole seconds)")
	fs.StringVar(&o.out, "out", "docs/bench", "report `DIR`, relative to the repository root")
	fs.StringVar(&only, "only", strings.Join(scenarioNames, ","), "scenarios to run, comma-separated: a (proxies), b (Node), c (artillery), d (mixed load), e (scaling)")
	fs.IntVar(&o.proxyThreads, "proxy-threads", 1, "nginx's worker processes and haproxy's threads in scenario a (the goal's reference is nginx with one worker; the balancer uses every CPU)")
	fs.StringVar(&o.render, "render", "", "write the report again from `FILE`, the results.json of an earlier run, measuring nothing (after a change to the report's text)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.render != "" {
		for _, f := range []string{"quick", "reps", "duration", "only", "proxy-threads"} {
			if set[f] {
				return o, fmt.Errorf("-%s: -render measures nothing; the run's own settings are in its results.json", f)
			}
		}
		return o, nil
	}
	o.artCount, o.artNum, o.warmup = 40, 50, warmupFor(false)
	if o.quick {
		if !set["reps"] {
			o.reps = quickReps
		}
		if !set["duration"] {
			o.duration = quickDuration
		}
		o.artCount, o.artNum, o.warmup = 10, 20, warmupFor(true)
	}
	if o.proxyThreads < 1 {
		return o, fmt.Errorf("-proxy-threads: want at least 1; got %d", o.proxyThreads)
	}
	if o.reps < 1 {
		return o, fmt.Errorf("-reps: want at least 1; got %d", o.reps)
	}
	if o.duration < time.Second {
		return o, fmt.Errorf("-duration: want at least 1s (wrk counts whole seconds); got %s", o.duration)
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(scenarioNames, s) {
			return o, fmt.Errorf("-only: unknown scenario %q; want some of %s", s, strings.Join(scenarioNames, ","))
		}
		o.only[s] = true
	}
	if len(o.only) == 0 {
		return o, errors.New("-only: no scenario selected")
	}
	return o, nil
}

// bench is one run: where things are, what it started, what it measured.
type bench struct {
	opts  options
	root  string // repository root
	tmp   string // binaries, generated configs, process logs
	tools tools
	procs *procs
	res   *results
	cores int
	out   io.Writer // progress lines
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	opts, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }
	outDir := opts.out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(root, outDir)
	}
	if opts.render != "" {
		if err := render(opts.render, outDir, os.Stdout); err != nil {
			logf("%v", err)
			return 1
		}
		logf("report written to %s", filepath.Join(outDir, "README.md"))
		return 0
	}

	// Ctrl-C and SIGTERM cancel the context; the deferred stopAll then
	// stops every child before the bench exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "clusterlb-bench-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	b := &bench{
		opts:  opts,
		root:  root,
		tmp:   tmp,
		procs: &procs{dir: tmp},
		cores: runtime.NumCPU(),
		out:   os.Stdout,
		res: &results{Started: time.Now(), Quick: opts.quick, Reps: opts.reps, Duration: opts.duration, Order: "mirrored", BusyRecorded: true, WorkerSweepPerRun: true,
			ProxyThreads: opts.proxyThreads, GoMaxProcs: runtime.GOMAXPROCS(0), ComplejaRun: runDuration(pathCompleja, opts.duration, opts.quick),
			NginxKeepaliveRequests: nginxKeepaliveRequests, NginxUpstreamIdle: nginxUpstreamIdle, TimeoutsRecorded: true},
	}
	defer b.procs.stopAll()

	b.tools = ensureTools(ctx, root, needsFor(opts.only), logf)
	if b.res.Commit, b.res.Dirty, err = gitState(ctx, root); err != nil {
		logf("the commit measured will not be in the report: %v", err)
	}
	logf("building ./balancer and ./backend")
	b.tools.balancer, b.tools.backend, err = build(ctx, root, tmp)
	if err != nil {
		logf("%v", err)
		return 1
	}
	mach := describeMachine(ctx, b.tools)
	logf("%s, %d cores; %d repetition(s) of %s per run", mach.CPU, mach.Cores, opts.reps, opts.duration)
	b.res.Machine, b.res.ArtCount, b.res.ArtNum = mach, opts.artCount, opts.artNum
	for _, s := range scenarioNames {
		if opts.only[s] {
			b.res.Scenarios = append(b.res.Scenarios, s)
		}
	}

	for _, s := range []struct {
		name string
		run  func(context.Context)
	}{
		{"a", b.scenarioA}, {"b", b.scenarioB}, {"c", b.scenarioC}, {"d", b.scenarioD}, {"e", b.scenarioE},
	} {
		if !opts.only[s.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.run(ctx)
	}
	if ctx.Err() != nil {
		logf("interrupted: processes stopped, no report written")
		return 130
	}
	b.res.Ended = time.Now()

	rep := &report{res: b.res, mach: mach, opts: opts, cores: b.cores}
	if err := rep.write(outDir); err != nil {
		logf("write report: %v", err)
		return 1
	}
	fmt.Fprintln(b.out)
	rep.printRatios(b.out)
	logf("report written to %s", filepath.Join(outDir, "README.md"))
	return 0
}

// render writes the report into outDir again from the results.json at
// path, and prints its ratios to w.
func render(path, outDir string, w io.Writer) error {
	res, err := loadResults(path)
	if err != nil {
		return err
	}
	opts := options{quick: res.Quick, reps: res.Reps, duration: res.Duration,
		artCount: res.ArtCount, artNum: res.ArtNum, proxyThreads: max(1, res.ProxyThreads), only: map[string]bool{}}
	for _, s := range res.Scenarios {
		opts.only[s] = true
	}
	rep := &report{res: res, mach: res.Machine, opts: opts, cores: res.Machine.Cores}
	if err := rep.write(outDir); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	rep.printRatios(w)
	return nil
}
