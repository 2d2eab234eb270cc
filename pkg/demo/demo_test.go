package demo

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
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv selects a helper-process mode when the test binary re-executes
// itself (the os/exec TestHelperProcess pattern), for TestWatchParentOrphaned.
const helperEnv = "CLUSTERLB_DEMO_TEST_HELPER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); mode {
	case "":
	case "intermediate":
		os.Exit(helperIntermediate())
	case "watch":
		os.Exit(helperWatch())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", helperEnv, mode)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m,
		// fasthttp starts this once per process, the first time any server
		// serves, to refresh its cached Date header; it never stops.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// Each Serve starts a worker-pool cleaner that sees Stop only after
		// its MaxIdleWorkerDuration sleep (10 s by default), so it outlives a
		// clean shutdown by up to 10 s. A Serve left running would still show
		// up as fasthttp.(*Server).Serve.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

// startApp serves New(cfg) on a free loopback port through serve (the code
// Run uses) and returns its base URL; cleanup shuts it down and checks that
// serve returned nil.
func startApp(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, New(cfg), ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// newClient returns a client that leaves no idle connection (and so no
// goroutine) behind.
func newClient(t *testing.T, keepAlive bool) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: !keepAlive}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// do sends one request and decodes the JSON object it answers, with every
// value rendered as a string so rows can compare with `got %q; want %q`.
func do(t *testing.T, c *http.Client, method, url string, hdr http.Header) (*http.Response, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("%s %s: Content-Type: got %q; want %q", method, url, got, want)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("%s %s: decode: %v", method, url, err)
	}
	body := make(map[string]string, len(raw))
	for k, v := range raw {
		body[k] = fmt.Sprint(v)
	}
	return resp, body
}

func checkBody(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("key %q missing from %v", k, got)
			continue
		}
		if g != w {
			t.Errorf("%s: got %q; want %q", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %q in %v", k, got)
		}
	}
}

func TestEndpoints(t *testing.T) {
	base := startApp(t, Config{WorkerID: 7, Exit: func(int) { t.Error("Exit called") }})
	client := newClient(t, false)
	pid := strconv.Itoa(os.Getpid())

	tests := []struct {
		name   string
		method string
		path   string
		status int
		want   map[string]string
	}{
		{"simple", "GET", "/operacion-simple", 200,
			map[string]string{"operation": "simple", "sum": "49995000", "pid": pid, "worker": "7"}},
		{"compleja n=10", "GET", "/operacion-compleja?n=10", 200,
			map[string]string{"operation": "compleja", "sum": "45", "pid": pid, "worker": "7"}},
		{"compleja n=1", "GET", "/operacion-compleja?n=1", 200,
			map[string]string{"operation": "compleja", "sum": "0", "pid": pid, "worker": "7"}},
		{"compleja default n", "GET", "/operacion-compleja", 200,
			map[string]string{"operation": "compleja", "sum": "1249999975000000", "pid": pid, "worker": "7"}},
		{"health", "GET", "/health", 200,
			map[string]string{"status": "ok", "pid": pid, "worker": "7"}},
		{"unknown path", "GET", "/nope", 404,
			map[string]string{"error": "not found"}},
		{"root", "GET", "/", 404,
			map[string]string{"error": "not found"}},
		{"wrong method", "POST", "/health", 405,
			map[string]string{"error": "method not allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, client, tt.method, base+tt.path, nil)
			if resp.StatusCode != tt.status {
				t.Errorf("status: got %d; want %d", resp.StatusCode, tt.status)
			}
			checkBody(t, body, tt.want)
		})
	}
}

func TestWorkerZeroWhenAlone(t *testing.T) {
	base := startApp(t, Config{})
	_, body := do(t, newClient(t, false), "GET", base+"/health", nil)
	if got, want := body["worker"], "0"; got != want {
		t.Errorf("worker: got %q; want %q", got, want)
	}
}

func TestComplejaBadN(t *testing.T) {
	base := startApp(t, Config{MaxN: 1000})
	client := newClient(t, false)

	tests := []struct {
		name  string
		query string
	}{
		{"not a number", "n=abc"},
		{"zero", "n=0"},
		{"negative", "n=-5"},
		{"too big", "n=1001"},
		{"overflows int64", "n=99999999999999999999"},
		{"fraction", "n=1.5"},
		{"empty", "n="},
		{"space", "n=%2010"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, client, "GET", base+"/operacion-compleja?"+tt.query, nil)
			if got, want := resp.StatusCode, 400; got != want {
				t.Errorf("status: got %d; want %d", got, want)
			}
			if len(body) != 1 {
				t.Errorf("body: got %v; want only an error", body)
			}
			msg := body["error"]
			for _, want := range []string{"query parameter n", "between 1 and 1000"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error: got %q; want it to contain %q", msg, want)
				}
			}
		})
	}

	t.Run("at the bound", func(t *testing.T) {
		resp, body := do(t, client, "GET", base+"/operacion-compleja?n=1000", nil)
		if got, want := resp.StatusCode, 200; got != want {
			t.Errorf("status: got %d; want %d", got, want)
		}
		if got, want := body["sum"], "499500"; got != want {
			t.Errorf("sum: got %q; want %q", got, want)
		}
	})
}

func TestDeadExitsAfterResponse(t *testing.T) {
	tests := []struct {
		name      string
		keepAlive bool // false: the client sends "Connection: close" itself
	}{
		{"keep-alive client", true},
		{"connection close client", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exited := make(chan int, 2)
			base := startApp(t, Config{WorkerID: 3, Exit: func(code int) { exited <- code }})

			resp, body := do(t, newClient(t, tt.keepAlive), "GET", base+"/dead", nil)
			if got, want := resp.StatusCode, 200; got != want {
				t.Errorf("status: got %d; want %d", got, want)
			}
			checkBody(t, body, map[string]string{
				"operation": "dead", "pid": strconv.Itoa(os.Getpid()), "worker": "3",
			})
			if !resp.Close {
				t.Errorf("response did not ask to close the connection to a dying process")
			}
			select {
			case code := <-exited:
				if code != 1 {
					t.Errorf("exit code: got %d; want %d", code, 1)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Exit was not called")
			}
		})
	}
}

func TestSumBelow(t *testing.T) {
	tests := []struct {
		name string
		n    int64
		want int64
	}{
		{"zero", 0, 0},
		{"one", 1, 0},
		{"ten", 10, 45},
		{"simple", SimpleN, 49995000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sumBelow(tt.n); got != tt.want {
				t.Errorf("sumBelow(%d): got %d; want %d", tt.n, got, tt.want)
			}
		})
	}
}

func TestNewClampsMaxN(t *testing.T) {
	base := startApp(t, Config{MaxN: 1 << 40})
	_, body := do(t, newClient(t, false), "GET", base+"/operacion-compleja?n=4294967297", nil)
	if got, want := body["error"], "query parameter n must be an integer between 1 and 4294967296; got \"4294967297\""; got != want {
		t.Errorf("error: got %q; want %q", got, want)
	}
}

func FuzzParseN(f *testing.F) {
	for _, s := range []string{"10", "0", "-5", "abc", "1.5", "", "+7", "007", "1000", "1001", "9223372036854775808"} {
		f.Add(s)
	}
	const maxN = 1000
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := parseN(raw, maxN)
		if err != nil {
			if !strings.Contains(err.Error(), "query parameter n") {
				t.Errorf("error %q does not name the parameter", err)
			}
			return
		}
		if n < 1 || n > maxN {
			t.Errorf("parseN(%q) = %d, outside 1..%d", raw, n, maxN)
		}
	})
}

func BenchmarkSumBelowComplejaDefault(b *testing.B) {
	for b.Loop() {
		sumBelow(DefaultComplejaN)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestListenAddr(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"unset", nil, ":8080"},
		{"empty", map[string]string{"PORT": ""}, ":8080"},
		{"worker", map[string]string{"PORT": "9101"}, "127.0.0.1:9101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ListenAddr(env(tt.env)); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestWorkerID(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    int
		wantErr bool
	}{
		{"unset", "", 0, false},
		{"zero", "0", 0, false},
		{"three", "3", 3, false},
		{"letters", "abc", 0, true},
		{"negative", "-1", 0, true},
		{"fraction", "1.5", 0, true},
		{"space", " 2", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := WorkerID(env(map[string]string{"WORKER_ID": tt.value}))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidWorkerID) {
					t.Fatalf("err: got %v; want one wrapping %v", err, ErrInvalidWorkerID)
				}
				if !strings.Contains(err.Error(), "WORKER_ID") || !strings.Contains(err.Error(), strconv.Quote(tt.value)) {
					t.Errorf("err: got %q; want it to name WORKER_ID and %q", err, tt.value)
				}
				return
			}
			if err != nil {
				t.Fatalf("err: got %v; want nil", err)
			}
			if got != tt.want {
				t.Errorf("got %d; want %d", got, tt.want)
			}
		})
	}
}

func TestRunAddressTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	err = Run(context.Background(), Config{Addr: addr})
	if err == nil {
		t.Fatal("Run on a taken address returned nil")
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("err: got %q; want it to name %q", err, addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("err: got %v; want one wrapping EADDRINUSE", err)
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	// Run takes an address, not a listener: borrow a free port. Another
	// process could grab it in between; then Run fails and so does the test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Addr: addr, WorkerID: 2}) }()

	client := newClient(t, false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d; want %d", resp.StatusCode, 200)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", addr, err)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v; want nil", err)
		}
	case <-time.After(ShutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// A context that is done before fasthttp got to Serve must still stop the
// server (see the comment in serve); goleak in TestMain catches a Serve left
// running.
func TestServeCanceledBeforeStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := serve(ctx, New(Config{}), ln); err != nil {
		t.Errorf("serve: got %v; want nil", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after serve returned", ln.Addr())
	}
}

// fakePPID returns parents[i] on its i-th call and the last one after that.
type fakePPID struct {
	parents []int
	calls   atomic.Int64
}

func (f *fakePPID) getppid() int {
	i := int(f.calls.Add(1)) - 1
	return f.parents[min(i, len(f.parents)-1)]
}

func TestWatchParentCallsGoneOnChange(t *testing.T) {
	// Unchanged for two polls, then re-parented to 1.
	f := &fakePPID{parents: []int{100, 100, 100, 1}}
	var gone atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchParent(context.Background(), time.Millisecond, f.getppid, func() { gone.Add(1) })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watchParent did not return after the parent changed")
	}
	if got, want := gone.Load(), int64(1); got != want {
		t.Errorf("gone calls: got %d; want %d", got, want)
	}
	if got, want := f.calls.Load(), int64(4); got != want {
		t.Errorf("getppid calls: got %d; want %d (it must stop polling)", got, want)
	}
}

func TestWatchParentStopsOnCancel(t *testing.T) {
	f := &fakePPID{parents: []int{100}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchParent(ctx, time.Millisecond, f.getppid, func() { t.Error("gone called with an unchanged parent") })
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watchParent did not return after cancel")
	}
}

// TestWatchParentOrphaned runs the real thing: the test binary starts an
// intermediate copy of itself, which starts a watching grandchild and exits
// once the grandchild has recorded its parent. The re-parented grandchild
// must notice and report "gone" on a pipe.
func TestWatchParentOrphaned(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no re-parenting on Windows")
	}
	report, reportW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer report.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = helperEnviron("intermediate")
	cmd.ExtraFiles = []*os.File{reportW}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	reportW.Close()
	if err != nil {
		t.Fatalf("intermediate: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("intermediate printed %q, not a pid", out)
	}
	exitedCleanly := false
	defer func() {
		if !exitedCleanly {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}()

	if err := report.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(report).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the grandchild's report: %v", err)
	}
	if got, want := line, "gone\n"; got != want {
		t.Fatalf("report: got %q; want %q", got, want)
	}
	// The grandchild exits right after reporting; EOF on the pipe (its last
	// writer) proves it, so there is nothing left to kill.
	if _, err := io.ReadAll(report); err != nil {
		t.Fatalf("waiting for the grandchild to exit: %v", err)
	}
	exitedCleanly = true
}

// helperEnviron is the environment of a helper process in mode. Under -race
// every process sleeps 1 s at exit (atexit_sleep_ms) unless told not to.
func helperEnviron(mode string) []string {
	return append(os.Environ(),
		helperEnv+"="+mode,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	)
}

// helperIntermediate starts the watching grandchild, waits until it has
// recorded its parent pid, prints its pid and exits, orphaning it.
func helperIntermediate() int {
	ready, readyW, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = helperEnviron("watch")
	// fd 3: the test's report pipe, fd 4: our ready pipe.
	child.ExtraFiles = []*os.File{os.NewFile(3, "report"), readyW}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	readyW.Close()
	if _, err := io.ReadAll(ready); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(child.Process.Pid)
	return 0
}

// helperWatch runs watchParent over the real os.Getppid, closing fd 4 once
// the parent pid is recorded, and writes "gone" to fd 3 when it fires. It
// gives up after 30s so it can never outlive a broken test for long.
func helperWatch() int {
	report := os.NewFile(3, "report")
	readyW := os.NewFile(4, "ready")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := true
	getppid := func() int {
		p := os.Getppid()
		if first {
			first = false
			readyW.Close()
		}
		return p
	}
	fired := false
	watchParent(ctx, 10*time.Millisecond, getppid, func() { fired = true })
	if !fired {
		fmt.Fprintln(report, "timeout")
		return 1
	}
	fmt.Fprintln(report, "gone")
	return 0
}

// TestMainTakesNoArguments: "backend -h" prints a usage line and starts
// no server (it had started one on :8080); any other argument is a
// mistake, exit 2.
func TestMainTakesNoArguments(t *testing.T) {
	t.Setenv("PORT", "")
	for args, want := range map[string]int{"-h": 0, "--help": 0, "-port": 2} {
		done := make(chan int, 1)
		go func() { done <- Main([]string{args}) }()
		select {
		case got := <-done:
			if got != want {
				t.Errorf("Main(%q) = %d; want %d", args, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Main(%q) did not return: it is serving", args)
		}
	}
}
