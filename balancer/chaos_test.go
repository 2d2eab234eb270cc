package main

// Chaos tests: load from a Go HTTP client while workers are killed,
// stopped, reloaded and scaled; every request must succeed. Skipped with
// -short.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// load sends GET path from conc goroutines until stop is closed or max
// requests were sent, and counts what failed.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	firstErrs    []string
	wg           sync.WaitGroup
	stop         chan struct{}
	client       *http.Client
}

func startLoad(t *testing.T, url string, conc int, max int64) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc},
	}}
	for range conc {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if max > 0 && l.sent.Add(1) > max {
					l.sent.Add(-1)
					return
				} else if max == 0 {
					l.sent.Add(1)
				}
				resp, err := l.client.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.firstErrs) < 5 {
						l.firstErrs = append(l.firstErrs, err.Error())
					}
					l.mu.Unlock()
				}
			}
		})
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

func (l *load) check(t *testing.T) {
	t.Helper()
	l.end()
	if l.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; want 0; first: %v", l.failed.Load(), l.sent.Load(), l.firstErrs)
	}
	if l.sent.Load() == 0 {
		t.Error("no request was sent")
	}
	t.Logf("%d requests, %d failed", l.sent.Load(), l.failed.Load())
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: skipped with -short")
	}
}

func TestChaosKillWorkers(t *testing.T) { forEngines(t, testChaosKillWorkers) }

func testChaosKillWorkers(t *testing.T, engine string) {
	skipShort(t)
	c := start(t, 3, "-engine", engine, "-workers", "3", "-admin-listen", "")
	l := startLoad(t, c.url+"/operacion-simple", 16, 0)
	kills := 0
	for range 8 {
		time.Sleep(300 * time.Millisecond)
		s, err := c.stats()
		if err != nil {
			t.Fatal(err)
		}
		pids := workerPids(s)
		if len(pids) == 0 {
			continue
		}
		syscall.Kill(pids[rand.IntN(len(pids))], syscall.SIGKILL)
		kills++
	}
	time.Sleep(300 * time.Millisecond)
	l.check(t)
	s := c.waitUp(3)
	var restarts int64
	for _, w := range s.Workers {
		restarts += w.Restarts
	}
	if restarts < int64(kills) {
		t.Errorf("got %d restarts in /stats after %d kills; want at least %d", restarts, kills, kills)
	}
}

func TestChaosStoppedWorker(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) { testChaosStoppedWorker(t, engine) })
}

// TestChaosStoppedCmdWorker: the same with any program as worker, whose
// default check (OPTIONS *, any answer) sees what a TCP connect cannot:
// the kernel still accepts a stopped process's connections.
func TestChaosStoppedCmdWorker(t *testing.T) {
	forEngines(t, func(t *testing.T, engine string) {
		testChaosStoppedWorker(t, engine, "-cmd", "PATH="+binDir+":$PATH backend")
	})
}

func testChaosStoppedWorker(t *testing.T, engine string, args ...string) {
	skipShort(t)
	c := start(t, 2, append([]string{"-engine", engine, "-workers", "2", "-admin-listen", ""}, args...)...)
	s, _ := c.stats()
	victim := s.Workers[0]
	syscall.Kill(victim.Pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(victim.Pid, syscall.SIGKILL) })
	for i := range 200 {
		status, _, err := c.get("/operacion-simple")
		if err != nil || status != 200 {
			t.Fatalf("request %d: got %d %v; want 200", i, status, err)
		}
	}
	c.waitFor("the stopped worker replaced", func(s statsDoc) bool {
		return s.Workers[0].Pid != victim.Pid && s.Workers[0].State == "up"
	})
}

func TestStalledWorkerHoldsNotEveryClient(t *testing.T) {
	forEngines(t, testStalledWorkerHoldsNotEveryClient)
}

// A stopped worker that the health check has not caught yet (checks here
// are ten minutes apart) keeps its place in the round-robin turns, but
// round-robin's bound stops it from taking more than its share of the
// requests in flight: the clients not stuck on it keep being served by the
// other worker, and the stuck ones are answered once it runs again.
func testStalledWorkerHoldsNotEveryClient(t *testing.T, engine string) {
	skipShort(t)
	c := start(t, 2, "-engine", engine, "-workers", "2", "-admin-listen", "", "-health-interval", "10m")
	s, _ := c.stats()
	victim, other := s.Workers[0], s.Workers[1]
	syscall.Kill(victim.Pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(victim.Pid, syscall.SIGKILL) })
	l := startLoad(t, c.url+"/operacion-simple", 8, 0)
	// Without the bound every client is stuck on the stopped worker after
	// its first turn or two, and the other worker serves a handful.
	const want = 500
	s = c.waitFor(fmt.Sprintf("worker %d to serve %d requests while worker %d is stopped", other.ID, want, victim.ID),
		func(s statsDoc) bool { return s.Workers[1].Requests >= other.Requests+want })
	if w := s.Workers[0]; w.Pid != victim.Pid || w.State != "up" {
		t.Fatalf("worker %d is pid %d %s; want the stopped pid %d still up (the bound, not the health check, at work)", w.ID, w.Pid, w.State, victim.Pid)
	}
	syscall.Kill(victim.Pid, syscall.SIGCONT)
	l.check(t)
}

func TestChaosReload(t *testing.T) { forEngines(t, testChaosReload) }

func testChaosReload(t *testing.T, engine string) {
	skipShort(t)
	c := start(t, 2, "-engine", engine, "-workers", "2", "-admin-listen", "")
	before, _ := c.stats()
	l := startLoad(t, c.url+"/operacion-simple", 16, 0)
	time.Sleep(200 * time.Millisecond)
	c.cmd.Process.Signal(syscall.SIGHUP)
	after := c.waitFor("every worker replaced", func(s statsDoc) bool {
		for i, w := range s.Workers {
			if w.Pid == before.Workers[i].Pid || w.State != "up" {
				return false
			}
		}
		return strings.Contains(c.logs.String(), "rolling reload done")
	})
	time.Sleep(300 * time.Millisecond)
	l.check(t)
	for i, w := range after.Workers {
		if w.ID != before.Workers[i].ID {
			t.Errorf("got worker id %d at %d; want %d kept", w.ID, i, before.Workers[i].ID)
		}
	}
}

func TestChaosScaleBySignals(t *testing.T) {
	skipShort(t)
	c := start(t, 2, "-workers", "2", "-admin-listen", "")
	l := startLoad(t, c.url+"/operacion-simple", 8, 0)
	c.cmd.Process.Signal(syscall.SIGTTIN)
	c.waitUp(3)
	c.cmd.Process.Signal(syscall.SIGTTIN)
	c.waitUp(4)
	c.cmd.Process.Signal(syscall.SIGTTOU)
	s := c.waitUp(3)
	l.check(t)
	for i, w := range s.Workers {
		if w.ID != i+1 {
			t.Errorf("got ids %+v; want 1..3", s.Workers)
		}
	}
	// Never fewer than one.
	for range 4 {
		c.cmd.Process.Signal(syscall.SIGTTOU)
		time.Sleep(50 * time.Millisecond)
	}
	c.waitUp(1)
}

// TestReloadKeepsScaledCount: a reload that leaves the file's workers as
// it was keeps the count a signal set, and says so; a setting a flag
// gives is not taken from the file, and that is said too; SIGTTOU at
// one worker is refused, and logged.
func TestReloadKeepsScaledCount(t *testing.T) {
	skipShort(t)
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(file, []byte("workers: 1\npolicy: least-conn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, 1, "-config", file, "-policy", "p2c")
	c.cmd.Process.Signal(syscall.SIGTTIN)
	c.waitUp(2)
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog("rolling reload done")
	log := c.logs.String()
	if !strings.Contains(log, "worker count kept") {
		t.Errorf("want the kept count said; log:\n%s", log)
	}
	if !strings.Contains(log, "a command-line flag gives it") || !strings.Contains(log, "setting=policy") {
		t.Errorf("want policy named as given by a flag; log:\n%s", log)
	}
	if s := c.waitUp(2); s.Policy != "p2c" {
		t.Errorf("got policy %q; want the flag's p2c", s.Policy)
	}
	c.cmd.Process.Signal(syscall.SIGTTOU)
	c.waitUp(1)
	c.cmd.Process.Signal(syscall.SIGTTOU)
	c.waitLog("last one is never removed")
	if n := len(c.waitUp(1).Workers); n != 1 {
		t.Errorf("got %d workers; want 1", n)
	}
}

// TestStartTimeoutSaysWhy: a worker that never comes up is logged with
// the failure of its last health check, so that its user learns why: a
// health path the app does not serve, or an app that does not listen on
// $PORT.
func TestStartTimeoutSaysWhy(t *testing.T) {
	for _, tt := range []struct{ name, cmd, healthPath, want string }{
		{"health path not served", "PATH=" + binDir + ":$PATH backend", "/helth", `last_check="GET /helth: status 404"`},
		{"not listening on PORT", "exec sleep 30", "/health", "connect: connection refused\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := start(t, 0, "-workers", "1", "-cmd", tt.cmd, "-health-path", tt.healthPath, "-start-timeout", "1s")
			c.waitLog("did not come up in time")
			if logs := c.logs.String(); !strings.Contains(logs, tt.want) {
				t.Errorf("log has no %s:\n%s", tt.want, logs)
			}
		})
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	skipShort(t)
	c := start(t, 0, "-workers", "2", "-admin-listen", "", "-cmd", "sh -c 'exit 3'")
	time.Sleep(3 * time.Second)
	resp, err := c.client.Get(c.url + "/operacion-simple")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || body.Error != "no worker available" {
		t.Errorf("got %d %q; want 503 %q", resp.StatusCode, body.Error, "no worker available")
	}
	s, _ := c.stats()
	var restarts int64
	for _, w := range s.Workers {
		restarts += w.Restarts
	}
	// 100 ms growing x1.5: about 8 restarts per worker in 3 s. A tight
	// loop would make thousands.
	if restarts > 30 {
		t.Errorf("got %d restarts in 3s; want the backoff to hold them to at most 30", restarts)
	}
	select {
	case <-c.exited:
		t.Fatal("balancer exited")
	default:
	}
}

func TestAdminAPI(t *testing.T) {
	skipShort(t)
	adminAddr := freeAddr(t)
	c := start(t, 2, "-workers", "2", "-admin-listen", adminAddr, "-admin-token", "s3cret")
	base := "http://" + adminAddr
	post := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path, token string
		status            int
	}{
		{"no token", "/scale?workers=3", "", 401},
		{"wrong token", "/scale?workers=3", "nope", 401},
		{"bad count", "/scale?workers=zero", "s3cret", 400},
		{"no count", "/scale", "s3cret", 400},
		{"unknown worker", "/workers/9/restart", "s3cret", 404},
		{"scale up", "/scale?workers=3", "s3cret", 200},
		{"restart one", "/workers/1/restart", "s3cret", 200},
		{"reload", "/reload", "s3cret", 200},
		{"scale down", "/scale?workers=2", "s3cret", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(tt.path, tt.token)
			if status != tt.status {
				t.Errorf("got %d %s; want %d", status, body, tt.status)
			}
			if !json.Valid([]byte(body)) {
				t.Errorf("got body %q; want JSON", body)
			}
		})
	}
	s := c.waitUp(2)
	if s.Workers[0].Restarts < 2 {
		t.Errorf("worker 1 got %d restarts; want at least 2 (restart + reload)", s.Workers[0].Restarts)
	}
	// The admin API is not on the public listener.
	req, _ := http.NewRequest(http.MethodPost, c.url+"/reload", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := c.client.Do(req)
	if err == nil {
		resp.Body.Close()
		if strings.Contains(resp.Header.Get("Content-Type"), "json") && resp.StatusCode == 200 {
			var b map[string]any
			if json.NewDecoder(resp.Body).Decode(&b); b["action"] == "reload" {
				t.Error("the public listener answered an admin call")
			}
		}
	}
}

// runtimeDoc is the admin API's /debug/runtime.
type runtimeDoc struct {
	Goroutines int `json:"goroutines"`
	OpenFDs    int `json:"open_fds"`
}

func TestNoLeaksAfter100kRequests(t *testing.T) {
	skipShort(t)
	adminAddr := freeAddr(t)
	c := start(t, 2, "-workers", "2", "-admin-listen", adminAddr)
	read := func() runtimeDoc {
		var d runtimeDoc
		resp, err := c.client.Get("http://" + adminAddr + "/debug/runtime")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&d)
		return d
	}
	// Warm up so pools are at their steady size, then measure.
	warm := startLoad(t, c.url+"/operacion-simple", 32, 2000)
	warm.wg.Wait()
	warm.check(t)
	c.client.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	base := read()

	l := startLoad(t, c.url+"/operacion-simple", 32, 100_000)
	l.wg.Wait()
	l.check(t)
	c.client.CloseIdleConnections()

	// The balancer keeps idle keep-alive connections to its workers, up
	// to one per concurrent client here; each holds an fd and two
	// goroutines, and the warm-up may not have opened them all. Anything
	// past that would grow with the request count: a leak.
	const conc = 32
	var now runtimeDoc
	deadline := time.Now().Add(15 * time.Second)
	for {
		now = read()
		if now.Goroutines <= base.Goroutines+2*conc+5 && now.OpenFDs <= base.OpenFDs+conc+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 100k requests: goroutines %d, fds %d; at start %d, %d", now.Goroutines, now.OpenFDs, base.Goroutines, base.OpenFDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("goroutines %d -> %d, fds %d -> %d", base.Goroutines, now.Goroutines, base.OpenFDs, now.OpenFDs)

	s, _ := c.stats()
	pids := workerPids(s)
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("got exit %d; want 0", code)
	}
	waitGone(t, pids, time.Second)
}

// TestFailedReloadKeepsTheCommand: a reload whose new command cannot
// start fails on its first replacement and leaves the cluster as it was,
// the command included: a worker that dies afterwards comes back with
// the command that worked. (Before, the failed reload's command stayed
// in force, and the next crash left the worker crash-looping.)
func TestFailedReloadKeepsTheCommand(t *testing.T) {
	skipShort(t)
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	good := "cmd: PATH=" + binDir + ":$PATH backend\n"
	if err := os.WriteFile(file, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, 2, "-workers", "2", "-config", file, "-start-timeout", "5s")
	if err := os.WriteFile(file, []byte("cmd: exec /nonexistent/worker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog("reload failed")
	s, _ := c.stats()
	victim := s.Workers[1]
	syscall.Kill(victim.Pid, syscall.SIGKILL)
	c.waitFor("worker 2 back, with the command that worked", func(s statsDoc) bool {
		w := s.Workers[1]
		return w.State == "up" && w.Pid != victim.Pid && w.Pid > 0
	})
}

// TestFailedReloadPutsBackTheReplacedWorkers: a reload whose new command
// starts worker 1 but not worker 2 fails at worker 2, and puts the
// command that worked back on worker 1, so that the cluster does not go
// on with two commands. (Before, worker 1 kept the failed reload's
// command until the next reload.)
func TestFailedReloadPutsBackTheReplacedWorkers(t *testing.T) {
	skipShort(t)
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(file, []byte("cmd: PATH="+binDir+":$PATH backend\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, 2, "-workers", "2", "-config", file, "-start-timeout", "5s")
	before, _ := c.stats()
	// Under a shell that stays the worker process, so that its command
	// line shows which settings it runs.
	bad := "cmd: >-\n  PATH=" + binDir + ":$PATH RELEASE=2 sh -c '[ \"$WORKER_ID\" = 1 ] || exit 3; exec backend'; exit $?\n"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog("reload failed")
	s, _ := c.stats()
	w1, w2 := s.Workers[0], s.Workers[1]
	if w1.Pid == before.Workers[0].Pid || w1.State != "up" || strings.Contains(cmdline(t, w1.Pid), "RELEASE=2") {
		t.Errorf("worker 1: pid %d (before the reload %d), %s, command %q; want a new process with the command before the reload",
			w1.Pid, before.Workers[0].Pid, w1.State, cmdline(t, w1.Pid))
	}
	if w1.Restarts != 2 {
		t.Errorf("worker 1: %d restarts; want 2, the reload's and the one putting the old command back", w1.Restarts)
	}
	if w2.Pid != before.Workers[1].Pid || w2.State != "up" {
		t.Errorf("worker 2: pid %d (before %d), %s; want the same process, up", w2.Pid, before.Workers[1].Pid, w2.State)
	}
}

// TestFailedReloadKeepsTheWorkerCount: a reload to fewer workers with a
// command that cannot start removes the extra workers first, then fails
// at the first replacement; the count goes back to what it was.
func TestFailedReloadKeepsTheWorkerCount(t *testing.T) {
	skipShort(t)
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(file, []byte("workers: 3\ncmd: PATH="+binDir+":$PATH backend\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, 3, "-config", file, "-start-timeout", "5s")
	if err := os.WriteFile(file, []byte("workers: 2\ncmd: exec /nonexistent/worker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog("reload failed")
	s, _ := c.stats()
	up := 0
	for _, w := range s.Workers {
		if w.State == "up" {
			up++
		}
	}
	if len(s.Workers) != 3 || up != 3 {
		t.Errorf("%d workers, %d up; want the 3 from before the reload, up", len(s.Workers), up)
	}
}

// TestFailedRevertStillPutsTheCountBack: a reload to fewer workers whose
// new command starts only worker 1, after the old command's script was
// deleted: the reload fails at worker 2 and putting the old command back
// on worker 1 fails too, yet the worker count goes back to 3 (the third
// waiting for a command that can start), and the next reload, with a
// working command and the same count, has all three up. (The count was
// left at 2 while the balancer took it for 3, so that reload kept 2.)
func TestFailedRevertStillPutsTheCountBack(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	file, script := filepath.Join(dir, "balancer.yaml"), filepath.Join(dir, "worker.sh")
	write := func(name, s string, mode os.FileMode) {
		if err := os.WriteFile(name, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(script, "#!/bin/sh\nexec "+filepath.Join(binDir, "backend")+"\n", 0o755)
	write(file, "workers: 3\ncmd: "+script+"\n", 0o644)
	c := start(t, 3, "-config", file, "-start-timeout", "5s", "-restart-backoff", "100ms")
	os.Remove(script)
	write(file, "workers: 2\ncmd: >-\n  PATH="+binDir+":$PATH sh -c '[ \"$WORKER_ID\" = 1 ] || exit 3; exec backend'; exit $?\n", 0o644)
	c.cmd.Process.Signal(syscall.SIGHUP)
	s := c.waitFor("the reload and its revert to fail", func(statsDoc) bool {
		return strings.Contains(c.logs.String(), "reload failed")
	})
	if !strings.Contains(c.logs.String(), "putting back the settings before the reload failed too") {
		t.Errorf("want the failed revert logged")
	}
	if len(s.Workers) != 3 {
		t.Errorf("%d workers after the failed reload; want 3, as before it", len(s.Workers))
	}

	write(script, "#!/bin/sh\nexec "+filepath.Join(binDir, "backend")+"\n", 0o755)
	write(file, "workers: 3\ncmd: "+script+"\n", 0o644)
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitFor("three workers up after the next reload", func(s statsDoc) bool {
		up := 0
		for _, w := range s.Workers {
			if w.State == "up" {
				up++
			}
		}
		return up == 3 && strings.Count(c.logs.String(), `msg="reload failed"`) == 1 && strings.Contains(c.logs.String(), "rolling reload done")
	})
}

// cmdline returns the command line of process pid, its arguments joined
// by spaces, and fails the test if there is no such process.
func cmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("command line of pid %d: %v", pid, err)
	}
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// TestReloadToMoreWorkersStartsEachOnce: a reload that raises the count
// replaces the workers there were and starts the new one once. (It scaled
// up first, then replaced every worker, the one just started included: a
// second process for it, and a restart counted.)
func TestReloadToMoreWorkersStartsEachOnce(t *testing.T) {
	skipShort(t)
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(file, []byte("workers: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := start(t, 1, "-config", file)
	before, _ := c.stats()
	if err := os.WriteFile(file, []byte("workers: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd.Process.Signal(syscall.SIGHUP)
	after := c.waitFor("two workers up after the reload", func(s statsDoc) bool {
		return len(s.Workers) == 2 && s.Workers[0].State == "up" && s.Workers[1].State == "up" &&
			strings.Contains(c.logs.String(), "rolling reload done")
	})
	time.Sleep(300 * time.Millisecond) // a second start of worker 2 would be under way by now
	after, _ = c.stats()
	if w := after.Workers[0]; w.Pid == before.Workers[0].Pid || w.Restarts != 1 {
		t.Errorf("worker 1: pid %d (was %d), restarts %d; want replaced once", w.Pid, before.Workers[0].Pid, w.Restarts)
	}
	if w := after.Workers[1]; w.Restarts != 0 || strings.Count(c.logs.String(), `"worker started" worker=2 `) != 1 {
		t.Errorf("worker 2: restarts %d, log:\n%s\nwant started once, no restart", w.Restarts, c.logs.String())
	}
}

// TestOutOfDescriptors: a flood of idle client connections past what the
// balancer's open-file limit allows. By default the balancer accepts only
// as many as leave it descriptors for its workers (max_conns), and goes
// on serving the connections it has; with a bound past the limit it runs
// out, and then neither dies (fasthttp's Serve ended at the first failed
// accept) nor takes its workers for hung (health checks it could not
// make took them down, and had them killed and restarted); a request that
// needs a connection it cannot open gets a 503, not the worker's 502.
func TestOutOfDescriptors(t *testing.T) { forEngines(t, testOutOfDescriptors) }

func testOutOfDescriptors(t *testing.T, engine string) {
	const nofile, flood = 256, 300
	for _, tt := range []struct {
		name string
		args []string
		ok   []int  // the statuses a request on a connection accepted before the flood may get
		logs string // what the log must say: the bound, and whether it ran out
	}{
		// (256 − 64 − 4 × 2) / 2 = 92 connections.
		{"default bound", nil, []int{200}, "client connections at max_conns; new ones wait in the listen queue\" max_conns=92"},
		{"bound past the limit", []string{"-max-conns", "100000"}, []int{200, 503}, "cannot accept a client connection"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wrapper := []string{"/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$@"`, nofile), "sh"}
			args := append([]string{"-engine", engine, "-workers", "2", "-health-interval", "20ms", "-health-fall", "2"}, tt.args...)
			c := startUnder(t, wrapper, 2, args...)
			// Kept-alive connections accepted before the flood, each
			// with a request made on its own, one at a time: the
			// balancer keeps one connection open to each worker.
			const clients = 4
			var hcs []*http.Client
			for range clients {
				hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				defer hc.CloseIdleConnections()
				if code, err := getStatus(hc, c.url+"/operacion-simple"); err != nil || code != 200 {
					t.Fatalf("before the flood: %d %v", code, err)
				}
				hcs = append(hcs, hc)
			}
			var conns []net.Conn
			defer func() {
				for _, nc := range conns {
					nc.Close()
				}
			}()
			for range flood {
				nc, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Fatalf("dial %d: %v", len(conns), err)
				}
				conns = append(conns, nc)
			}
			// Many health checks' time, with the flood held and no
			// request meanwhile: a worker answering requests has its
			// failed checks excused as busy.
			time.Sleep(500 * time.Millisecond)
			// Then requests from all the clients at once: one worker
			// gets more than one, and a connection must be opened to it.
			var wg sync.WaitGroup
			codes := make(chan int, 3*clients)
			for _, hc := range hcs {
				wg.Go(func() {
					for range 3 {
						code, err := getStatus(hc, c.url+"/operacion-compleja")
						if err != nil {
							t.Errorf("during the flood: %v", err)
						}
						codes <- code
					}
				})
			}
			wg.Wait()
			close(codes)
			for code := range codes {
				if !slices.Contains(tt.ok, code) {
					t.Errorf("during the flood: status %d; want one of %v", code, tt.ok)
				}
			}
			var s statsDoc
			for _, hc := range hcs[:1] {
				resp, err := hc.Get(c.url + "/stats")
				if err != nil {
					t.Fatalf("stats during the flood: %v", err)
				}
				err = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			if tt.args == nil && (s.MaxConns != 92 || s.Connections != 92) {
				t.Errorf("stats: %d client connections of %d; want 92 of 92, the bound reached", s.Connections, s.MaxConns)
			}
			if !strings.Contains(c.logs.String(), tt.logs) {
				t.Errorf("the log does not say %q: the flood did not do what it is for", tt.logs)
			}
			if s.Retries != 0 {
				t.Errorf("%d retries; want none: another worker's connection would want a descriptor too", s.Retries)
			}
			for _, w := range s.Workers {
				if w.State != "up" || w.Restarts != 0 || w.Errors != 0 {
					t.Errorf("worker %d: state %s, %d restarts, %d errors; want up, none, none: the balancer's shortage is not the worker's", w.ID, w.State, w.Restarts, w.Errors)
				}
			}
			for _, nc := range conns {
				nc.Close()
			}
			conns = nil
			// The flood gone, a new client gets in.
			c.waitFor("a new connection served", func(statsDoc) bool {
				code, _, err := c.get("/operacion-simple")
				return err == nil && code == 200
			})
		})
	}
}

// getStatus GETs url with hc and returns the status, the body read.
func getStatus(hc *http.Client, url string) (int, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}
