package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReportWrite renders a report from made-up figures: the tables, the
// goals and the plots, with one target failed as fasthttp can be.
func TestReportWrite(t *testing.T) {
	ms := time.Millisecond
	res := &results{Started: time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC), Quick: true, Reps: 1, Duration: 2 * time.Second}
	for _, ep := range []string{"simple", "compleja"} {
		res.add(key{Scenario: "a", Target: "balancer-httputil", Endpoint: ep}, sample{RPS: 7000, P99: 20 * ms, RSS: 18 << 20})
		res.add(key{Scenario: "a", Target: "balancer-fasthttp", Endpoint: ep}, sample{Err: `engine: want one of httputil; got "fasthttp"`})
		res.add(key{Scenario: "a", Target: "nginx", Endpoint: ep}, sample{RPS: 10000, P99: 15 * ms})
		res.add(key{Scenario: "a", Target: "haproxy", Endpoint: ep}, sample{RPS: 9000, P99: 16 * ms})
		res.add(key{Scenario: "a", Target: "direct", Endpoint: ep}, sample{RPS: 12000, P99: 10 * ms})
	}
	for _, n := range []int{1, 2, 3, 4} {
		res.add(key{Scenario: "e-workers", Target: "httputil", Endpoint: "simple", Param: n}, sample{RPS: float64(3000 * n), P99: ms * time.Duration(n)})
	}
	for _, c := range eConns {
		res.add(key{Scenario: "e-conc", Target: "httputil", Endpoint: "simple", Param: c}, sample{RPS: float64(100 * c), P99: ms * time.Duration(c)})
	}
	opts, err := parseFlags([]string{"-quick", "-only", "a,e"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if d := os.Getenv("BENCH_REPORT_DIR"); d != "" {
		dir = d // to look at the rendering
	}
	rep := &report{res: res, opts: opts, cores: 2, mach: machine{CPU: "Test CPU", Cores: 2, Versions: map[string]string{"go": "go1.26"}}}
	if err := rep.write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{
		"2026-11-26 15:00 UTC", "Test CPU", "Quick mode", "go run ./bench",
		"| balancer-httputil | 7 000 | 0.70× | 0.58× |",
		"| balancer-fasthttp | failed |",
		"| httputil vs nginx (a, simple) | ≥ 0.60× nginx req/s | 0.70× (7 000 vs 10 000 req/s); errors 0 vs 0 | **met** |",
		"| fasthttp vs nginx (a, simple) | ≥ 1.00× nginx req/s, p99 ≤ nginx's | no figure: engine",
		"| 18.0 MiB | scenario a, over the 2 shared workers |",
		"![requests per second on /operacion-simple](a_simple.png)",
		"e_workers.png", "e_connections.png",
		"## What did not run",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	for _, f := range []string{"a_simple.png", "e_workers.png", "e_connections.png", "results.json"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v; want a non-empty file", f, err)
		}
	}
	var out strings.Builder
	rep.printRatios(&out)
	if !strings.Contains(out.String(), "a simple balancer-httputil / nginx") || !strings.Contains(out.String(), "goals met") {
		t.Errorf("printRatios:\n%s", out.String())
	}
}

// TestReportScenarioB: the least-conn row has its ratio against Node's
// cluster, and the simple goal is read on the default policy's row, not on
// whichever row does best.
func TestReportScenarioB(t *testing.T) {
	ms := time.Millisecond
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 1, Duration: 2 * time.Second}
	for _, ep := range []string{"simple", "compleja"} {
		res.add(key{Scenario: "b", Target: "balancer-httputil", Endpoint: ep}, sample{RPS: 5000, P99: 40 * ms})
		res.add(key{Scenario: "b", Target: "balancer-fasthttp", Endpoint: ep}, sample{RPS: 6000, P99: 80 * ms})
		res.add(key{Scenario: "b", Target: bLeastConn, Endpoint: ep}, sample{RPS: 9000, P99: 30 * ms})
		res.add(key{Scenario: "b", Target: "haproxy", Endpoint: ep}, sample{RPS: 8500, P99: 30 * ms})
		res.add(key{Scenario: "b", Target: "node-cluster", Endpoint: ep}, sample{RPS: 10000, P99: 20 * ms})
	}
	opts, err := parseFlags([]string{"-only", "b"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	rep := &report{res: res, opts: opts, cores: 2, mach: machine{CPU: "Test CPU", Cores: 2}}
	var md strings.Builder
	rep.sectionB(&md)
	for _, g := range append(evalGoals(res), peerGoals(res)...) {
		fmt.Fprintf(&md, "%s | %s | %v\n", g.Name, g.Got, g.Met)
	}
	for _, want := range []string{
		"| balancer-fasthttp-least-conn | simple | 9 000 | 0.90× | 30.00 ms | 1.50× | 0 |",
		"| balancer-fasthttp | simple | 6 000 | 0.60× |",
		"| haproxy | simple | 8 500 | 0.85× |",
		"-cmd node, fasthttp vs Node cluster (b, simple) | 0.60× (6 000 vs 10 000 req/s); errors 0 vs 0 | false",
		"haproxy over node app.js vs Node cluster (b, simple) | 0.85× (8 500 vs 10 000 req/s); errors 0 vs 0 | true",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	var out strings.Builder
	rep.printRatios(&out)
	for _, want := range []string{"b simple " + bLeastConn + " / node-cluster", "b simple haproxy / node-cluster", "haproxy over node app.js vs Node cluster (b, simple)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printRatios lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(md.String()+out.String(), "nginx over node app.js") {
		t.Errorf("a line for nginx, which this run did not measure:\n%s\n%s", md.String(), out.String())
	}
}

// TestRenderCommittedReport writes the report again from the committed
// results.json: it must come out as the committed README.md, so that a
// change to the report's code is seen in docs/bench at once (rewrite it
// with go run ./bench -render docs/bench/results.json).
func TestRenderCommittedReport(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	committed := filepath.Join(root, "docs", "bench")
	dir := t.TempDir()
	var out strings.Builder
	if err := render(filepath.Join(committed, "results.json"), dir, &out); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(committed, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("docs/bench/README.md is not what its results.json renders to: line %d\n got: %s\nwant: %s\nrun: go run ./bench -render docs/bench/results.json", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("docs/bench/README.md is not what its results.json renders to: %d lines against %d", len(gl), len(wl))
	}
	if !strings.Contains(out.String(), "goals met") {
		t.Errorf("render printed no goals:\n%s", out.String())
	}
}

// TestRenderRefusesOldResults: a results.json without the machine and
// the scenarios cannot make a whole report, and says what to do.
func TestRenderRefusesOldResults(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "results.json")
	if err := os.WriteFile(old, []byte(`{"started":"2026-11-26T10:00:00Z","reps":3,"duration_ns":10000000000,"series":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := render(old, filepath.Join(dir, "out"), &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "run the bench again") {
		t.Fatalf("render of an old results.json: got %v, want an error that says to run the bench again", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "README.md")); err == nil {
		t.Error("render wrote a report from an old results.json")
	}
}

// TestReportRSSSweep: the memory section shows scenario e's RSS at every
// number of connections, and what the process held at 64 before and after
// it had served 512, computed from the samples.
func TestReportRSSSweep(t *testing.T) {
	ms := time.Millisecond
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 3, Duration: 2 * time.Second}
	for _, c := range eConns {
		for rep := range 3 {
			rss := int64(20+c/16) << 20 // 20, 20, 24, 36, 52 MiB
			if c == 64 && rep > 0 {
				rss = int64(36+2*rep) << 20 // 38, 40 MiB after the burst
			}
			res.add(key{Scenario: "e-conc", Target: "fasthttp", Endpoint: "simple", Param: c}, sample{RPS: 1000, P99: ms, RSS: rss})
		}
	}
	md := renderReport(t, res, "e")
	for _, want := range []string{
		"| 512 | – | – | 52.0 MiB | 52.0 MiB |",
		"| 64 | – | – | 38.0 MiB | 40.0 MiB |",
		"The fasthttp balancer's first run at 64 connections, before it had served more than 64, peaked at 24.0 MiB; its 2 later ones, each in the same process after its runs at 512 connections, at 39.0 MiB (median; highest 40.0 MiB).",
		"A process that has served 512 connections holds more at 64",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), "The httputil balancer's first run") {
		t.Errorf("report speaks of httputil's first run, which has no figure")
	}
}

// TestReportBusyStarts: runs that started before the CPUs were idle are
// counted in the method text and listed; a results.json from before that
// was recorded says so instead of claiming none.
func TestReportBusyStarts(t *testing.T) {
	ms := time.Millisecond
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 2, Duration: 2 * time.Second, BusyRecorded: true}
	k := key{Scenario: "d", Target: "round-robin", Endpoint: "simple"}
	res.add(k, sample{RPS: 1000, P99: ms})
	res.add(k, sample{RPS: 1000, P99: ms, Busy: true})
	md := renderReport(t, res, "d")
	for _, want := range []string{
		"In this run **1 of the 2 measurements** did",
		"- d round-robin simple: 1 of 2 repetitions started before the CPUs were idle",
		"c (Artillery) and d (mixed load) have none",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	res.BusyRecorded = false
	md = renderReport(t, res, "d")
	if !strings.Contains(md.String(), "written before the bench recorded it") {
		t.Errorf("an old results.json: report lacks that it did not record busy starts:\n%s", md.String())
	}
}

// TestReportLinksMissedGoals: each goal not met links to tuning.md's
// discussion; a met one does not.
func TestReportLinksMissedGoals(t *testing.T) {
	ms := time.Millisecond
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 1, Duration: 2 * time.Second}
	for _, ep := range []string{"simple", "compleja"} {
		res.add(key{Scenario: "b", Target: "balancer-fasthttp", Endpoint: ep}, sample{RPS: 9000, P99: ms})
		res.add(key{Scenario: "b", Target: "node-cluster", Endpoint: ep}, sample{RPS: 10000, P99: ms})
	}
	md := renderReport(t, res, "b")
	if want := "- -cmd node, fasthttp vs Node cluster (b, compleja): [where the time goes now](tuning.md#where-the-time-goes-now)"; !strings.Contains(md.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, md.String())
	}
	if strings.Contains(md.String(), "- -cmd node, fasthttp vs Node cluster (b, simple): [where") {
		t.Errorf("report links a goal that was met:\n%s", md.String())
	}
}

// TestReportRunIdentity: the report names the commit measured, whether the
// tree had changes, and when the run started and ended; a results.json
// without them still renders, and says the commit is unknown.
func TestReportRunIdentity(t *testing.T) {
	start := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		res  results
		want string
	}{
		{"recorded", results{Started: start, Ended: start.Add(41 * time.Minute), Commit: "0123456789abcdef0123456789abcdef01234567"},
			"Measured from 2026-11-27 03:00 UTC to 03:41 UTC on commit `0123456789ab` by"},
		{"dirty, past midnight", results{Started: start.Add(-4 * time.Hour), Ended: start.Add(time.Minute), Commit: "0123456789abcdef", Dirty: true},
			"Measured from 2026-11-26 23:00 UTC to 2026-11-27 03:01 UTC on commit `0123456789ab` with changes not committed by"},
		{"an older file", results{Started: start},
			"Measured on 2026-11-27 03:00 UTC (the commit measured was not recorded) by"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.res
			res.Reps, res.Duration = 1, 2*time.Second
			md := renderReport(t, &res, "d")
			if !strings.Contains(md.String(), tt.want) {
				t.Errorf("report lacks %q:\n%s", tt.want, md.String()[:400])
			}
		})
	}
}

// TestReportMethodText: the method text gives each scenario's wrk command
// and says which Artillery ran.
func TestReportMethodText(t *testing.T) {
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 3, Duration: 10 * time.Second}
	opts, err := parseFlags([]string{"-only", "a,c,d,e"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	mach := machine{CPU: "Test CPU", Cores: 2, Versions: map[string]string{"artillery": "Artillery 2.0.99"}, ArtilleryFrom: "found on PATH"}
	rep := &report{res: res, opts: opts, cores: 2, mach: mach}
	var md strings.Builder
	rep.markdown(&md, nil)
	for _, want := range []string{
		"against **direct** as two `wrk -t1 -c32` at once",
		"`wrk -t2 -cN -d10s` for N = 1, 8, 64, 256, 512 (`-t1` for N = 1)",
		"in d as `wrk -t1 -c1 -d10s` on /operacion-compleja next to `wrk -t1 -c8 -d10s` on /operacion-simple",
		"(this run: Artillery 2.0.99, found on PATH)",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

// TestReportThreads: scenario a's text gives every target's threads and
// nginx's upstream idle timeout, from what the run recorded.
func TestReportThreads(t *testing.T) {
	dir := t.TempDir()
	res := &results{Started: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), Reps: 1, Duration: 10 * time.Second,
		ProxyThreads: 4, GoMaxProcs: 8, Scenarios: []string{"a"}, Machine: machine{CPU: "Test CPU", Cores: 8},
		NginxUpstreamIdle: nginxUpstreamIdle}
	path := filepath.Join(dir, "results.json")
	if err := res.save(path); err != nil {
		t.Fatal(err)
	}
	if err := render(path, dir, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"`go run ./bench -reps 1 -proxy-threads 4 -only a`",
		"nginx (`worker_processes 4`", "haproxy (`nbthread 4`",
		"nginx and haproxy 4 threads (worker processes) each; each balancer runs with GOMAXPROCS 8",
		"idle upstream connections closed after 4s (`keepalive_timeout`",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "The goal's reference is nginx with one worker") {
		t.Errorf("report explains one nginx worker, with 4")
	}
}

// renderReport writes the Markdown report of res as a run with -only
// scenarios would, on a made-up 2-core machine.
func renderReport(t *testing.T, res *results, scenarios string) *strings.Builder {
	t.Helper()
	opts, err := parseFlags([]string{"-only", scenarios}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	rep := &report{res: res, opts: opts, cores: 2, mach: machine{CPU: "Test CPU", Cores: 2}}
	md := new(strings.Builder)
	rep.markdown(md, nil)
	return md
}

// TestBRowsFollowTheFile: scenario b's rows are the ones the results
// measured, so a file written before a row was added renders without an
// empty one, and a new file shows it.
func TestBRowsFollowTheFile(t *testing.T) {
	old := &results{}
	for _, tg := range []string{"balancer-httputil", "balancer-fasthttp", bLeastConn, "node-cluster"} {
		old.add(key{Scenario: "b", Target: tg, Endpoint: "simple"}, sample{RPS: 1})
	}
	if got := bRows(old); slices.Contains(got, bMaxConns) || len(got) != 4 {
		t.Errorf("old file: got rows %v; want the four it measured", got)
	}
	for _, tg := range []string{bMaxConns, "nginx", "haproxy"} {
		old.add(key{Scenario: "b", Target: tg, Endpoint: "simple"}, sample{RPS: 1})
	}
	if got := bRows(old); !slices.Equal(got, bTargets) {
		t.Errorf("new file: got rows %v; want %v", got, bTargets)
	}
}

// TestReportMixedSpread: scenario d's table shows simple's p75 and p90
// beside its p99 when the run kept them (medians over the repetitions),
// and keeps its older columns for a run from before that did not.
func TestReportMixedSpread(t *testing.T) {
	ms := time.Millisecond
	for _, withSpread := range []bool{true, false} {
		res := &results{Started: time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC), Reps: 3, Duration: 2 * time.Second}
		for i, pol := range policies {
			for rep := range 3 {
				s := sample{RPS: 5000, P99: 17 * ms}
				if withSpread {
					s.P75 = time.Duration(3+i+rep) * ms // medians 4, 5, 6 ms
					s.P90 = time.Duration(10+rep) * ms  // median 11 ms
				}
				res.add(key{Scenario: "d", Target: pol, Endpoint: "simple"}, s)
				res.add(key{Scenario: "d", Target: pol, Endpoint: "compleja"}, sample{RPS: 40, P99: 30 * ms})
			}
		}
		opts, err := parseFlags([]string{"-only", "d"}, &strings.Builder{})
		if err != nil {
			t.Fatal(err)
		}
		var md strings.Builder
		(&report{res: res, opts: opts, cores: 2}).sectionD(&md)
		want := []string{"| round-robin | 4.00 ms | 11.00 ms | 17.00 ms |", "| p2c | 6.00 ms | 11.00 ms | 17.00 ms |", "| policy | simple p75 | simple p90 | simple p99 |"}
		if !withSpread {
			want = []string{"| round-robin | 17.00 ms |", "| policy | simple p99 | × round-robin |"}
		}
		for _, w := range want {
			if !strings.Contains(md.String(), w) {
				t.Errorf("spread %v: section d lacks %q:\n%s", withSpread, w, md.String())
			}
		}
	}
}
