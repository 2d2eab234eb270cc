package main

// End-to-end tests: they build the real balancer binary, start it on a
// free loopback port with real worker processes, and clean up every
// process they started, by pid.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/config"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "balancer-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "balancer"), ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build balancer: %v\n%s", err, out)
		os.Exit(1)
	}
	out, err = exec.Command("go", "build", "-o", filepath.Join(dir, "backend"), "../backend").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build backend: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// engines are the proxy engines every request-path test runs against.
var engines = []string{"httputil", "fasthttp"}

// forEngines runs test once per engine, as a subtest named after it: one
// set of assertions for both.
func forEngines(t *testing.T, test func(t *testing.T, engine string)) {
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { test(t, e) })
	}
}

// running is one running balancer, with its workers.
type running struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	url    string
	logs   *testutil.SyncBuffer
	exited chan struct{}
	client *http.Client
	seen   map[int]bool // every worker pid seen, for the cleanup
	mu     sync.Mutex
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newCluster is the harness for a balancer that will listen on addr; the
// caller sets c.cmd and starts it.
func newCluster(t *testing.T, addr string) *running {
	return &running{
		t:      t,
		addr:   addr,
		url:    "http://" + addr,
		logs:   &testutil.SyncBuffer{},
		exited: make(chan struct{}),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		seen:   map[int]bool{},
	}
}

// start runs the balancer with args on a free port and waits until want
// workers are up.
func start(t *testing.T, want int, args ...string) *running {
	t.Helper()
	return startUnder(t, nil, want, args...)
}

// startUnder is start with the balancer run by the command line
// wrapper, which ends by running its arguments with exec (a shell's
// ulimit); nil runs it directly.
func startUnder(t *testing.T, wrapper []string, want int, args ...string) *running {
	t.Helper()
	addr := freeAddr(t)
	c := newCluster(t, addr)
	// The admin API is off unless a test asks for it (later flags win):
	// the default 127.0.0.1:9090 may be taken on a shared machine.
	argv := append([]string{filepath.Join(binDir, "balancer"), "-listen", addr, "-admin-listen", ""}, args...)
	argv = append(wrapper[:len(wrapper):len(wrapper)], argv...)
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.cleanup)
	if want > 0 {
		c.waitUp(want)
	} else {
		c.waitFor("stats", func(statsDoc) bool { return true })
	}
	return c
}

// cleanup kills the balancer and every worker it was seen with, by pid.
func (c *running) cleanup() {
	select {
	case <-c.exited:
	default:
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for pid := range c.seen {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	c.client.CloseIdleConnections()
	if c.t.Failed() {
		c.t.Logf("balancer output:\n%s", c.logs.String())
	}
}

type statsDoc struct {
	UptimeS  float64 `json:"uptime_s"`
	Policy   string  `json:"policy"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Retries  int64   `json:"retries"`
	Waiting  int64   `json:"waiting"`
	// Client connections open now, and their bound.
	Connections int64 `json:"connections"`
	MaxConns    int64 `json:"max_conns"`
	Workers     []struct {
		ID         int     `json:"id"`
		Pid        int     `json:"pid"`
		Addr       string  `json:"addr"`
		State      string  `json:"state"`
		Requests   int64   `json:"requests"`
		InFlight   int64   `json:"in_flight"`
		Errors     int64   `json:"errors"`
		Restarts   int64   `json:"restarts"`
		UptimeS    float64 `json:"uptime_s"`
		CPUPercent float64 `json:"cpu_percent"`
		RSSBytes   uint64  `json:"rss_bytes"`
	} `json:"workers"`
}

func (c *running) stats() (statsDoc, error) {
	var s statsDoc
	resp, err := c.client.Get(c.url + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return s, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, err
	}
	c.mu.Lock()
	for _, w := range s.Workers {
		if w.Pid != 0 {
			c.seen[w.Pid] = true
		}
	}
	c.mu.Unlock()
	return s, nil
}

// waitFor polls the stats until cond holds, for at most 20 s.
func (c *running) waitFor(what string, cond func(statsDoc) bool) statsDoc {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last statsDoc
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			c.t.Fatalf("balancer exited while waiting for %s", what)
		default:
		}
		last, err = c.stats()
		if err == nil && cond(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("waiting for %s: last stats %+v, err %v", what, last, err)
	return last
}

// waitLog waits until the balancer's log has s in it.
func (c *running) waitLog(s string) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("%q in the log", s), func(statsDoc) bool { return strings.Contains(c.logs.String(), s) })
}

func (c *running) waitUp(n int) statsDoc {
	c.t.Helper()
	return c.waitFor(fmt.Sprintf("%d workers up", n), func(s statsDoc) bool {
		up := 0
		for _, w := range s.Workers {
			if w.State == "up" {
				up++
			}
		}
		return up == n && len(s.Workers) == n
	})
}

// get sends GET path and returns the status and body.
func (c *running) get(path string) (int, []byte, error) {
	resp, err := c.client.Get(c.url + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// stop sends sig to the balancer and returns its exit code.
func (c *running) stop(sig syscall.Signal) int {
	c.t.Helper()
	c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("balancer did not exit within 30s of %v", sig)
	}
	return c.cmd.ProcessState.ExitCode()
}

// alive reports whether pid is a live process (a zombie is not).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still alive %v after", left, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func workerPids(s statsDoc) []int {
	var pids []int
	for _, w := range s.Workers {
		if w.Pid != 0 {
			pids = append(pids, w.Pid)
		}
	}
	return pids
}

type answer struct {
	Operation string `json:"operation"`
	Sum       int64  `json:"sum"`
	Pid       int    `json:"pid"`
	Worker    int    `json:"worker"`
}

func TestStatsShapeAndSpread(t *testing.T) { forEngines(t, testStatsShapeAndSpread) }

func testStatsShapeAndSpread(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2")
	s, err := c.stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Policy != "round-robin" {
		t.Errorf("got policy %q; want round-robin", s.Policy)
	}
	pids := map[int]bool{}
	for i, w := range s.Workers {
		if w.ID != i+1 {
			t.Errorf("got worker id %d at %d; want %d", w.ID, i, i+1)
		}
		if !strings.HasPrefix(w.Addr, "127.0.0.1:") {
			t.Errorf("got addr %q; want 127.0.0.1:PORT", w.Addr)
		}
		if w.Pid == 0 || pids[w.Pid] {
			t.Errorf("got pid %d for worker %d; want its own", w.Pid, w.ID)
		}
		pids[w.Pid] = true
	}

	const n = 1000
	byWorker := map[int]int{}
	for range n {
		status, body, err := c.get("/operacion-simple")
		if err != nil || status != 200 {
			t.Fatalf("got %d %v; want 200", status, err)
		}
		var a answer
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
		if a.Sum != 49995000 || a.Operation != "simple" {
			t.Fatalf("got %+v; want operation simple, sum 49995000", a)
		}
		if !pids[a.Pid] {
			t.Errorf("answer from pid %d, not a worker in /stats %v", a.Pid, pids)
		}
		byWorker[a.Worker]++
	}
	s, _ = c.stats()
	mean := float64(n) / 2
	for _, w := range s.Workers {
		if got := float64(w.Requests); got < mean*0.95 || got > mean*1.05 {
			t.Errorf("worker %d served %d of %d; want within 5%% of %v either side", w.ID, w.Requests, n, mean)
		}
		if int(w.Requests) != byWorker[w.ID] {
			t.Errorf("worker %d: /stats says %d requests, answers say %d", w.ID, w.Requests, byWorker[w.ID])
		}
	}
	if s.Requests < n {
		t.Errorf("got %d requests in /stats; want at least %d", s.Requests, n)
	}
}

func TestKilledWorkerComesBack(t *testing.T) { forEngines(t, testKilledWorkerComesBack) }

func testKilledWorkerComesBack(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2")
	s, _ := c.stats()
	victim, other := s.Workers[0], s.Workers[1]
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s = c.waitFor("worker 1 back under a new pid", func(s statsDoc) bool {
		w := s.Workers[0]
		return w.State == "up" && w.Pid != 0 && w.Pid != victim.Pid
	})
	if s.Workers[0].Restarts != 1 {
		t.Errorf("got restarts %d; want 1", s.Workers[0].Restarts)
	}
	if s.Workers[1].Pid != other.Pid || s.Workers[1].Restarts != 0 {
		t.Errorf("worker 2 changed: %+v", s.Workers[1])
	}
	// The new process has the same WORKER_ID.
	for range 4 {
		_, body, err := c.get("/operacion-simple")
		if err != nil {
			t.Fatal(err)
		}
		var a answer
		json.Unmarshal(body, &a)
		if a.Worker == 1 && a.Pid != s.Workers[0].Pid {
			t.Errorf("worker 1 answered from pid %d; want %d", a.Pid, s.Workers[0].Pid)
		}
	}
}

func TestLoneWorkerRestartLosesNoRequest(t *testing.T) {
	forEngines(t, testLoneWorkerRestartLosesNoRequest)
}

// testLoneWorkerRestartLosesNoRequest: with one worker, the requests that
// come while it restarts wait for it, as the kernel's listen queue holds
// them for Node's cluster, instead of getting 503 at once.
func testLoneWorkerRestartLosesNoRequest(t *testing.T, engine string) {
	c := start(t, 1, "-engine", engine, "-workers", "1", "-restart-backoff", "1s")
	s, _ := c.stats()
	victim := s.Workers[0]
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the worker down", func(s statsDoc) bool { return s.Workers[0].State == "down" })
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			status, body, err := c.get("/operacion-simple")
			if err != nil || status != http.StatusOK {
				t.Errorf("request during the restart: got %d %s %v; want 200", status, body, err)
			}
		})
	}
	c.waitFor("the 5 requests shown waiting", func(s statsDoc) bool { return s.Waiting == 5 })
	wg.Wait()
	if s, _ := c.stats(); s.Waiting != 0 {
		t.Errorf("waiting after the restart: got %d; want 0", s.Waiting)
	}
	s, _ = c.stats()
	if w := s.Workers[0]; w.Pid == victim.Pid || w.Restarts != 1 || w.Requests < 5 {
		t.Errorf("worker after the restart: %+v; want a new pid, 1 restart, the 5 requests", w)
	}
}

func TestDeadEndpointRestartsWorker(t *testing.T) { forEngines(t, testDeadEndpointRestartsWorker) }

func testDeadEndpointRestartsWorker(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2")
	s, _ := c.stats()
	status, body, err := c.get("/dead")
	if err != nil || status != 200 {
		t.Fatalf("GET /dead: %d %v", status, err)
	}
	var a answer
	json.Unmarshal(body, &a)
	c.waitFor("the dead worker replaced", func(n statsDoc) bool {
		for _, w := range n.Workers {
			if w.ID == a.Worker {
				return w.State == "up" && w.Pid != a.Pid && w.Restarts == 1
			}
		}
		return false
	})
	// Every request meanwhile and after is answered.
	for range 50 {
		if status, _, err := c.get("/operacion-simple"); err != nil || status != 200 {
			t.Fatalf("got %d %v; want 200", status, err)
		}
	}
	_ = s
}

func TestSIGTERMLeavesNoProcess(t *testing.T) { forEngines(t, testSIGTERMLeavesNoProcess) }

func testSIGTERMLeavesNoProcess(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2")
	s, _ := c.stats()
	pids := workerPids(s)
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("got exit code %d; want 0", code)
	}
	waitGone(t, pids, time.Second) // the balancer waited for them already
	if !strings.Contains(c.logs.String(), "stopped") {
		t.Errorf("no stop in the log:\n%s", c.logs.String())
	}
}

// TestSIGTERMEndsWaitsForAWorker: a request waiting for a worker on its
// way up (here one that never listens) gets its 503 when the balancer is
// stopped, which exits then, instead of the stop waiting for it until
// start_timeout gives the worker up.
func TestSIGTERMEndsWaitsForAWorker(t *testing.T) {
	c := start(t, 0, "-workers", "1", "-cmd", "sleep 600", "-start-timeout", "10m", "-shutdown-grace", "10m")
	status := make(chan int, 1)
	go func() {
		code, _, err := c.get("/operacion-simple")
		if err != nil {
			t.Error(err)
		}
		status <- code
	}()
	time.Sleep(200 * time.Millisecond) // the request waits by now
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("got exit code %d; want 0", code)
	}
	if code := <-status; code != http.StatusServiceUnavailable {
		t.Errorf("got %d; want 503", code)
	}
}

// A balancer whose output goes to a pipe that its reader closed (a
// `| head`, a log shipper that restarts) keeps serving: each log line
// then fails with EPIPE, and Go's default for SIGPIPE on stdout or
// stderr would have ended the process there, killing its workers and
// the requests in flight.
func TestClosedOutputPipe(t *testing.T) {
	c, r := startOnPipe(t, "-workers", "2")
	// Read the output until both workers are up, then close the pipe.
	go io.Copy(c.logs, r)
	c.waitUp(2)
	r.Close()

	// Killing a worker makes the balancer log.
	c.killWorker1()
	if code, _, err := c.get("/operacion-simple"); err != nil || code != 200 {
		t.Fatalf("GET after the pipe closed: %d, %v", code, err)
	}
	c.stopCleanly()
}

// A balancer whose output stalls (a terminal paused with Ctrl-S, a pipe
// whose reader stopped reading) keeps serving and stops when asked: its
// log lines wait in a bounded queue, and past it are dropped and counted
// (internal/asyncout's tests read the count), instead of blocking each
// request (its access log line), each restart and the stop on a write
// that never ends.
func TestStalledOutputPipe(t *testing.T) {
	c, r := startOnPipe(t, "-workers", "2", "-access-log")
	defer r.Close()
	c.waitUp(2)
	c.client.Timeout = 10 * time.Second

	// Each request logs a line of about 2 KiB (its URI): 1500 of them are
	// more than the pipe (64 KiB) and the queue (1 MiB) hold, nobody
	// reading the pipe.
	path := "/operacion-simple?pad=" + strings.Repeat("x", 2000)
	for i := range 1500 {
		if code, _, err := c.get(path); err != nil || code != 200 {
			t.Fatalf("request %d with the output stalled: %d, %v", i, code, err)
		}
	}
	// A worker's restart is logged too; and it stops when asked, the
	// output still stalled.
	c.killWorker1()
	c.stopCleanly()
}

// startOnPipe runs the balancer with args, its stdout and stderr on a
// pipe whose read end it returns: nothing reads it unless the test does.
func startOnPipe(t *testing.T, args ...string) (*running, *os.File) {
	t.Helper()
	addr := freeAddr(t)
	c := newCluster(t, addr)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(filepath.Join(binDir, "balancer"), append([]string{"-listen", addr, "-admin-listen", ""}, args...)...)
	c.cmd.Stdout = w
	c.cmd.Stderr = w
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.cleanup)
	return c, r
}

// killWorker1 kills worker 1 with SIGKILL and waits for it to be back
// under a new pid.
func (c *running) killWorker1() {
	c.t.Helper()
	s, err := c.stats()
	if err != nil {
		c.t.Fatal(err)
	}
	victim := s.Workers[0].Pid
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	c.waitFor("worker 1 back under a new pid", func(s statsDoc) bool {
		w := s.Workers[0]
		return w.State == "up" && w.Pid != 0 && w.Pid != victim
	})
}

// stopCleanly sends SIGTERM and wants exit 0 with no worker left.
func (c *running) stopCleanly() {
	c.t.Helper()
	s, _ := c.stats()
	pids := workerPids(s)
	if code := c.stop(syscall.SIGTERM); code != 0 {
		c.t.Errorf("got exit code %d (%v); want 0", code, c.cmd.ProcessState)
	}
	waitGone(c.t, pids, time.Second)
}

// TestDefaultHeaderBound: by default a header block past 64 KiB gets 431
// from either engine. net/http's default, 1 MiB, let 500 clients that
// never ended such a header hold 2 GB of the httputil engine's memory. The
// fasthttp engine has always read at most 64 KiB of header, but closed the
// connection on its 431 with the rest of the header unread: the client,
// still sending it, got a reset instead, now and then.
func TestDefaultHeaderBound(t *testing.T) { forEngines(t, testDefaultHeaderBound) }

func testDefaultHeaderBound(t *testing.T, engine string) {
	c := start(t, 1, "-workers", "1", "-engine", engine)
	for _, tt := range []struct {
		pad  int
		want int
	}{
		{1 << 10, 200},
		{1 << 20, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, err := http.NewRequest("GET", c.url+"/stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Pad", strings.Repeat("x", tt.pad))
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatalf("a header of %d bytes: %v", tt.pad, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("a header of %d bytes: got %d; want %d", tt.pad, resp.StatusCode, tt.want)
		}
	}
}

// TestJSONLogDurations: the JSON log writes a duration as the text log
// does ("30s"), not as slog's default count of nanoseconds.
func TestJSONLogDurations(t *testing.T) {
	c := start(t, 1, "-workers", "1", "-log-format", "json")
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("got exit code %d; want 0", code)
	}
	if logs := c.logs.String(); !strings.Contains(logs, `"grace":"30s"`) {
		t.Errorf("no \"grace\":\"30s\" in the stop line:\n%s", logs)
	}
}

func TestSIGKILLLeavesNoOrphan(t *testing.T) {
	c := start(t, 2, "-workers", "2")
	s, _ := c.stats()
	pids := workerPids(s)
	c.stop(syscall.SIGKILL)
	waitGone(t, pids, 5*time.Second)
	// The port is free again.
	l, err := net.Listen("tcp", c.addr)
	if err != nil {
		t.Errorf("listen address still taken after SIGKILL: %v", err)
	} else {
		l.Close()
	}
}

func TestCmdWorker(t *testing.T) { forEngines(t, testCmdWorker) }

func testCmdWorker(t *testing.T, engine string) {
	// Any program as worker: here the standalone backend binary, found by
	// the shell on $PATH, health-checked by TCP connect.
	c := start(t, 2, "-engine", engine, "-workers", "2", "-cmd", "PATH="+binDir+":$PATH backend")
	seen := map[int]bool{}
	for range 20 {
		status, body, err := c.get("/operacion-simple")
		if err != nil || status != 200 {
			t.Fatalf("got %d %v; want 200", status, err)
		}
		var a answer
		json.Unmarshal(body, &a)
		seen[a.Worker] = true
	}
	if !seen[1] || !seen[2] {
		t.Errorf("answers came from workers %v; want 1 and 2", seen)
	}
}

// TestCmdListeningElsewhereIsNamed: a -cmd that listens, but not where
// the balancer connects (a port of its own, or its PORT on another
// address), is named in the log with what it listens on, seconds after
// its start (or of its listening, for one slow to open its port) rather
// than at start_timeout; one that is only slow to listen is not.
func TestCmdListeningElsewhereIsNamed(t *testing.T) {
	const hint = "worker listens, but not on its PORT"
	backend := filepath.Join(binDir, "backend")
	tests := []struct {
		name, cmd string
		want      string // in the hint; "" for no hint
	}{
		{"a port of its own", "env PORT=0 " + backend, "listening=[127.0.0.1:"},
		{"its PORT on ::1", "env HOST=::1 " + backend, "listening=[[::1]:"},
		{"a port of its own, slow to open", "sleep 3; PORT=0 exec " + backend, "listening=[127.0.0.1:"},
		{"slow to listen on its PORT", "sleep 3; exec " + backend, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if strings.Contains(tt.cmd, "::1") {
				if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
					t.Skip("no IPv6 loopback here:", err)
				} else {
					ln.Close()
				}
			}
			c := start(t, 0, "-workers", "1", "-cmd", tt.cmd, "-start-timeout", "1m")
			if tt.want == "" {
				c.waitUp(1)
				if strings.Contains(c.logs.String(), hint) {
					t.Errorf("a worker that came up on its PORT was named as listening elsewhere:\n%s", c.logs)
				}
				return
			}
			c.waitLog(hint)
			if line := lineWith(c.logs.String(), hint); !strings.Contains(line, tt.want) {
				t.Errorf("the hint does not name the listener: %q; want %q in it", line, tt.want)
			}
		})
	}
}

// lineWith returns the first line of s that holds sub.
func lineWith(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}

func TestHostileInput(t *testing.T) { forEngines(t, testHostileInput) }

func testHostileInput(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2", "-read-header-timeout", "300ms", "-max-header-bytes", "4096")

	// net/http takes a bare LF as a line's end anywhere in a head; fasthttp finds the head's
	// end by CRLF CRLF, so the fasthttp engine refuses a head ending otherwise at once,
	// where it used to wait for read_header_timeout and answer 408.
	bareEnd := 200
	if engine == "fasthttp" {
		bareEnd = 400
	}
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"head in bare LFs", "GET /operacion-simple HTTP/1.1\nHost: x\n\n", bareEnd},
		{"blank line a bare LF", "GET /operacion-simple HTTP/1.1\r\nHost: x\r\n\n", bareEnd},
		{"bare LF before a CRLF CRLF end", "GET /operacion-simple HTTP/1.1\nHost: x\r\n\r\n", 200},
		{"HTTP/1.0 request line in bare LF, no fields", "GET /operacion-simple HTTP/1.0\n\r\n", 200},
		{"oversized header", "GET /operacion-simple HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n", 431},
		{"Content-Length with Transfer-Encoding", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		// RFC 9112 6.1: a coding the server does not know is 501, before the length is looked at.
		{"unknown transfer coding", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501},
		// A control byte in a field value is malformed (RFC 9110 5.5), not an unknown coding.
		{"control byte in Transfer-Encoding", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400},
		{"transfer coding identity", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nabc", 501},
		{"chunked twice", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"unknown coding with Content-Length", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\nabc", 501},
		{"two different Content-Lengths", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", 400},
		{"two equal Content-Lengths", "POST /operacion-simple HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"no Host in HTTP/1.1", "GET /operacion-simple HTTP/1.1\r\n\r\n", 400},
		{"empty Host in HTTP/1.1", "GET /operacion-simple HTTP/1.1\r\nHost:\r\n\r\n", 400},
		{"no Host in HTTP/1.0", "GET /operacion-simple HTTP/1.0\r\n\r\n", 200},
		{"HTTP/2.0 in an HTTP/1 request line", "GET /operacion-simple HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"asterisk-form for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"fragment in the target", "GET /operacion-simple#top HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// RFC 9110 4.2.1 and 4.2.4: an http URI with no host is refused, and userinfo in
		// one is an error (fasthttp made it an Authorization header).
		{"absolute-form target", "GET http://x/operacion-simple HTTP/1.1\r\nHost: y\r\n\r\n", 200},
		{"absolute-form target with userinfo", "GET http://user:pw@x/operacion-simple HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute-form target with no host", "GET http:///operacion-simple HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"Host with a port that is no number", "GET /operacion-simple HTTP/1.1\r\nHost: x:abc\r\n\r\n", 400},
		{"Host with two ports", "GET /operacion-simple HTTP/1.1\r\nHost: x:80:80\r\n\r\n", 400},
		{"Host with a port and no name", "GET /operacion-simple HTTP/1.1\r\nHost: :80\r\n\r\n", 400},
		{"Host with a bracket unclosed", "GET /operacion-simple HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
		{"Host with an IPv6 literal", "GET /operacion-simple HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200},
		{"absolute-form target with a port and no name", "GET http://:80/operacion-simple HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// A chunked body that HTTP/1.0 framing would read as the next request.
		{"HTTP/1.0 with Transfer-Encoding", "POST /operacion-simple HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"2c\r\nGET /operacion-simple HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n", 400},
		// The balancer carries no tunnel: refused before any worker, the
		// tunnel's first bytes (a TLS hello) sent at once unread.
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00\x05hello", 405},
		{"fine request", "GET /operacion-simple HTTP/1.1\r\nHost: x\r\n\r\n", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, tt.raw)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("got %d; want %d", resp.StatusCode, tt.status)
			}
		})
	}

	t.Run("slowloris is cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection still open after 10s of an unfinished header; want it closed by read_header_timeout")
		}
	})

	// No hostile request reached a worker or took one down.
	s := c.waitUp(2)
	for _, w := range s.Workers {
		if w.Restarts != 0 {
			t.Errorf("worker %d restarted %d times; want 0", w.ID, w.Restarts)
		}
	}
	// Counted: the fine ones, and the CONNECT, answered by the proxy
	// itself as the client's fault; not what the server refused first.
	var counted int64
	for _, tt := range tests {
		if tt.status == 200 || tt.status == 405 {
			counted++
		}
	}
	if s.Requests != counted || s.Errors != 0 {
		t.Errorf("got %d requests and %d errors; want %d (the fine ones and the CONNECT) and 0", s.Requests, s.Errors, counted)
	}
}

// TestOptionsStarReachesWorker: an OPTIONS * asks the server in general;
// both engines pass it to a worker and give back its answer (the built-in
// backend's is a 404), counted as a request. The httputil engine's server
// had answered 200 itself, uncounted, where the fasthttp engine asked a
// worker.
func TestOptionsStarReachesWorker(t *testing.T) { forEngines(t, testOptionsStarReachesWorker) }

func testOptionsStarReachesWorker(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2")
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "OPTIONS"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s, err := c.stats()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "not found") || s.Requests != 1 {
		t.Errorf("got %d %q, %d requests counted; want the worker's 404 and 1", resp.StatusCode, body, s.Requests)
	}
}

func TestBadSettingsExit2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative workers", []string{"-workers", "-3"}, "workers"},
		{"unknown policy", []string{"-policy", "fastest"}, "policy"},
		{"unknown flag", []string{"-wrokers", "2"}, "wrokers"},
		{"missing config file", []string{"-config", "/nonexistent.yaml"}, "/nonexistent.yaml"},
		// 192.0.2.0/24 is for documentation: never this machine's.
		{"listen address not local", []string{"-listen", "192.0.2.1:0"}, "listen 192.0.2.1:0"},
		{"admin address not local", []string{"-listen", "127.0.0.1:0", "-admin-listen", "192.0.2.1:0", "-admin-token", "s3cret"}, "admin_listen 192.0.2.1:0"},
		{"admin address public without a token", []string{"-listen", "127.0.0.1:0", "-admin-listen", ":0"}, "admin_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(filepath.Join(binDir, "balancer"), tt.args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("got %v; want exit status 2\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("got %q; want it to name %q", out, tt.want)
			}
		})
	}
}

func TestListenAddressTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(filepath.Join(binDir, "balancer"), "-listen", l.Addr().String(), "-workers", "1")
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("got exit 0; want an error exit when the address is taken")
		}
		if !strings.Contains(out.String(), "address already in use") {
			t.Errorf("got %q; want it to say the address is in use", out.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("balancer hung on a taken address")
	}
}

// A taken default admin address (9090 is a Prometheus server's too)
// turns the admin API off with a warning instead of stopping the start;
// the same address asked for stops it.
func TestDefaultAdminAddressTaken(t *testing.T) {
	def := config.Default().AdminListen
	l, err := net.Listen("tcp", def)
	switch {
	case err == nil:
		defer l.Close()
	case !errors.Is(err, syscall.EADDRINUSE):
		t.Skipf("cannot hold %s: %v", def, err)
	} // else taken already, as this test wants

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // kills it if it starts
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "balancer"), "-listen", freeAddr(t), "-workers", "1", "-admin-listen", def).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "admin_listen") {
		t.Errorf("asked for, taken: got %v %q; want exit status 1 naming admin_listen", err, out)
	}

	addr := freeAddr(t)
	c := newCluster(t, addr)
	c.cmd = exec.Command(filepath.Join(binDir, "balancer"), "-listen", addr, "-workers", "1")
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.cleanup)
	c.waitUp(1)
	if _, body, err := c.get("/operacion-simple"); err != nil {
		t.Fatalf("balancer not serving: %v %s", err, body)
	}
	if log := c.logs.String(); !strings.Contains(log, "admin API off") || !strings.Contains(log, "admin=off") {
		t.Errorf("want a warning that the admin API is off, and admin=off where the balancer says it listens; log:\n%s", log)
	}
}

func TestMetricsAddUpToTraffic(t *testing.T) { forEngines(t, testMetricsAddUpToTraffic) }

func testMetricsAddUpToTraffic(t *testing.T, engine string) {
	c := start(t, 2, "-engine", engine, "-workers", "2", "-admin-listen", "")
	const n = 300
	for range n {
		if status, _, err := c.get("/operacion-simple"); err != nil || status != 200 {
			t.Fatalf("got %d %v; want 200", status, err)
		}
	}
	_, body, err := c.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	perWorker := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "balancer_worker_requests_total{") {
			continue
		}
		var id string
		var v float64
		if _, err := fmt.Sscanf(line[strings.Index(line, "worker=")+len("worker="):], "%q} %g", &id, &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		perWorker[id] = v
		sum += v
	}
	if sum != n || len(perWorker) != 2 {
		t.Errorf("got per-worker requests_total %v (sum %v); want 2 workers adding up to %d", perWorker, sum, n)
	}
	for _, name := range []string{"balancer_worker_up", "balancer_worker_request_duration_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestStatusCommandListsWorkers(t *testing.T) {
	c := start(t, 2, "-workers", "2", "-admin-listen", "")
	s, _ := c.stats()
	out, err := exec.Command(filepath.Join(binDir, "balancer"), "status", "-addr", c.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("balancer status: %v\n%s", err, out)
	}
	for _, w := range s.Workers {
		if !strings.Contains(string(out), fmt.Sprint(w.Pid)) {
			t.Errorf("status output lacks worker %d's pid %d:\n%s", w.ID, w.Pid, out)
		}
	}
	// Nothing listening: a clear error, exit 1.
	out, err = exec.Command(filepath.Join(binDir, "balancer"), "status", "-addr", freeAddr(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no balancer answers") {
		t.Errorf("got %v %q; want an error saying no balancer answers", err, out)
	}
	// A listener that never takes the connection (a balancer at its
	// max_conns): a timeout that says where to ask instead.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	out, err = exec.Command(filepath.Join(binDir, "balancer"), "status", "-addr", held.Addr().String(), "-timeout", "300ms").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "admin API") {
		t.Errorf("got %v %q; want a timeout that names the admin API", err, out)
	}
	// A stray argument (an address without -addr): exit 2, named.
	cmd := exec.Command(filepath.Join(binDir, "balancer"), "status", c.addr)
	out, _ = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), c.addr) {
		t.Errorf("status with a stray argument: got exit %d %q; want 2, naming it", code, out)
	}
}

func TestWorkerOutputIsPrefixed(t *testing.T) {
	c := start(t, 2, "-workers", "2", "-admin-listen", "",
		"-cmd", "echo hello from $WORKER_ID; echo oops >&2; PATH="+binDir+":$PATH exec backend")
	s, _ := c.stats()
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range s.Workers {
		want := fmt.Sprintf("worker=%d pid=%d | hello from %d", w.ID, w.Pid, w.ID)
		for !strings.Contains(c.logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %q:\n%s", want, c.logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !strings.Contains(c.logs.String(), "| oops") {
		t.Errorf("stderr line not forwarded:\n%s", c.logs.String())
	}
}

func TestHTTP2Clients(t *testing.T) {
	c := start(t, 2, "-workers", "2")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	for range 4 {
		resp, err := client.Get(c.url + "/operacion-simple")
		if err != nil {
			t.Fatal(err)
		}
		var a answer
		json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || a.Sum != 49995000 {
			t.Fatalf("got %s %d %+v; want HTTP/2 200 with the sum", resp.Proto, resp.StatusCode, a)
		}
	}
}
