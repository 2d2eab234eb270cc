package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/admin"
	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's process-wide helpers live as long as the process,
		// or end on their own after a period no test should wait for.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	)
}

func TestProxyOptions(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int // the setting
		want       int // proxy.Options.MaxRetries
	}{
		{"auto", -1, 0},
		{"none", 0, -1},
		{"three", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.MaxRetries = tt.maxRetries
			if got := ProxyOptions(cfg, slog.New(slog.DiscardHandler)).MaxRetries; got != tt.want {
				t.Errorf("got MaxRetries %d; want %d", got, tt.want)
			}
		})
	}
	for _, tt := range []struct{ setting, want int64 }{{0, -1}, {1 << 20, 1 << 20}, {512, 512}} {
		cfg := config.Default()
		cfg.RetryBufferBytes = tt.setting
		if got := ProxyOptions(cfg, nil).RetryBufferBytes; got != tt.want {
			t.Errorf("retry_buffer_bytes %d: got proxy's %d; want %d (0 buffers nothing)", tt.setting, got, tt.want)
		}
	}
	cfg := config.Default()
	if ProxyOptions(cfg, nil).AccessLog != nil {
		t.Error("got an access log with access_log off")
	}
	cfg.AccessLog = true
	if ProxyOptions(cfg, slog.New(slog.DiscardHandler)).AccessLog == nil {
		t.Error("got no access log with access_log on")
	}
}

// TestAskedForLinesPassTheLogLevel: the access log and the workers'
// output in JSON are written whatever log_level is, as the workers'
// lines in text always were: log_level is for the balancer's own lines.
// (At warn, both had gone unwritten, a worker's crash trace included.)
func TestAskedForLinesPassTheLogLevel(t *testing.T) {
	var buf testutil.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := config.Default()
	cfg.AccessLog = true
	ProxyOptions(cfg, logger).AccessLog.Info("access", "status", 200)
	WorkerOutput("json", logger, nil, nil)(1, 42, true, []byte("panic: boom"))
	logger.Info("the balancer's own, below its level")
	got := buf.String()
	for _, want := range []string{`"msg":"access"`, `"msg":"panic: boom"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log has no %s at log_level warn:\n%s", want, got)
		}
	}
	if strings.Contains(got, "below its level") {
		t.Errorf("log_level no longer holds for the balancer's own lines:\n%s", got)
	}
}

func TestWorkerSpec(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cmd, check string
		argv       []string
		path       string // the HTTP health check's path; "" for TCP
	}{
		{"built-in backend", "", "", []string{exe, "backend"}, "/health"},
		{"any program", "node app.js", "", supervisor.Command("node app.js"), health.Ping},
		{"any program, checked on a path", "node app.js", "/health", supervisor.Command("node app.js"), "/health"},
		{"any program, checked over TCP", "node app.js", config.HealthTCP, supervisor.Command("node app.js"), ""},
		{"built-in backend, checked over TCP", "", config.HealthTCP, []string{exe, "backend"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Cmd, cfg.HealthPath = tt.cmd, tt.check
			spec, err := WorkerSpec(cfg, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(spec.Argv, tt.argv) {
				t.Errorf("got argv %q; want %q", spec.Argv, tt.argv)
			}
			switch c := spec.Check.(type) {
			case health.TCP:
				if tt.path != "" {
					t.Errorf("got a TCP check; want GET %s", tt.path)
				}
			case *health.HTTP:
				if c.Path != tt.path {
					t.Errorf("got an HTTP check of %q; want %q", c.Path, tt.path)
				}
			default:
				t.Errorf("got check %T", spec.Check)
			}
		})
	}
}

// TestOwnPathsNeverProxied: on either engine, the balancer's own pages
// are answered by the balancer, every other path by a worker, and a page
// whose path is set empty is off (proxied like any other).
func TestOwnPathsNeverProxied(t *testing.T) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "worker")
	}))
	defer worker.Close()
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Default()
			cfg.Engine = engine
			cfg.MetricsPath = "" // off
			p := pool.New(new(pool.RoundRobin))
			w := pool.NewWorker(1)
			w.SetProcess(pool.NewProcess(100, worker.Listener.Addr().String(), time.Now()), pool.Up)
			p.Add(w)
			logger := slog.New(slog.DiscardHandler)
			stats := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "stats") })
			metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })
			var stopping atomic.Bool
			front := NewFrontend(cfg, p, ProxyOptions(cfg, logger), NewOwnPaths(cfg, p, stats, metrics, &stopping), logger)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- front.Serve(ln) }()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := front.Shutdown(ctx); err != nil {
					t.Errorf("shutdown: %v", err)
				}
				<-done
				front.CloseIdleConnections()
			}()
			c := &http.Client{}
			defer c.CloseIdleConnections()
			for _, tt := range []struct{ path, want string }{
				{cfg.StatsPath, "stats"},
				{"/metrics", "worker"},
				{"/operacion-simple", "worker"},
				{cfg.StatsPath + "/x", "worker"},
				// net/http's spelling, the same in both engines:
				// unescaped, not cleaned (the fasthttp engine's server
				// had cleaned these, and redirected to /stats).
				{"/" + cfg.StatsPath, "worker"},
				{"/x/.." + cfg.StatsPath, "worker"},
				{"/st%61ts", "stats"},
			} {
				resp, err := c.Get("http://" + ln.Addr().String() + tt.path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != tt.want {
					t.Errorf("GET %s: got %q; want %q", tt.path, body, tt.want)
				}
			}
			resp, err := c.Get("http://" + ln.Addr().String() + cfg.ReadyzPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s with a worker up: got %d; want 200", cfg.ReadyzPath, resp.StatusCode)
			}
		})
	}
}

// TestCloseCutsRequestsInFlight: once shutdown_grace has run out, Close
// closes the client connections whose requests are still waiting for a
// worker, on either engine; none is left open to serve another request.
func TestCloseCutsRequestsInFlight(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer worker.Close()
	defer close(release)
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Default()
			cfg.Engine = engine
			front, _, addr, done := serveFront(t, cfg, worker.Listener.Addr().String(), false)
			defer front.CloseIdleConnections()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the worker")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := front.Shutdown(ctx); err == nil {
				t.Fatal("Shutdown returned nil with a request in flight")
			}
			front.Close()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the client's connection is still open 5 s after Close")
			}
			if n != 0 {
				t.Errorf("got %d bytes of an answer; want the connection closed", n)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("Serve did not return after Close")
			}
		})
	}
}

// TestClientThatStopsReadingIsCut: a client that takes none of a large
// answer's bytes for send_timeout loses its connection, on either engine,
// and the worker's request is no longer held for it. (Nothing cut it off:
// the kernel probes a zero window for ever.)
func TestClientThatStopsReadingIsCut(t *testing.T) {
	const size = 32 << 20 // far past what the sockets' buffers hold
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		buf := make([]byte, 1<<20)
		for range size / len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer worker.Close()
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Default()
			cfg.Engine = engine
			cfg.SendTimeout = 300 * time.Millisecond
			front, w, addr, done := serveFront(t, cfg, worker.Listener.Addr().String(), true)
			defer func() {
				front.Close()
				<-done
				front.CloseIdleConnections()
			}()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second) // reading nothing, for ten send timeouts
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := io.Copy(io.Discard, conn)
			if n >= size {
				t.Fatalf("the client got all %d bytes of the answer (%d with the header); want its connection cut", size, n)
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection was still open 20 s after the client began to read (%d bytes)", n)
			}
			settleInFlight(t, w)
		})
	}
}

// serveFront serves cfg's engine on a loopback listener (under
// GuardListener when guarded), over a pool of one worker at workerAddr. It
// returns the frontend, the worker, the address and Serve's result.
func serveFront(t *testing.T, cfg config.Config, workerAddr string, guarded bool) (Frontend, *pool.Worker, string, chan error) {
	t.Helper()
	front, w := newFront(cfg, workerAddr)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := ln
	if guarded {
		served = GuardListener(ln, cfg, 0, nil, nil)
	}
	done := make(chan error, 1)
	go func() { done <- front.Serve(served) }()
	return front, w, ln.Addr().String(), done
}

// newFront builds cfg's engine over a pool of one worker at workerAddr.
func newFront(cfg config.Config, workerAddr string) (Frontend, *pool.Worker) {
	p := pool.New(new(pool.RoundRobin))
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(100, workerAddr, time.Now()), pool.Up)
	p.Add(w)
	logger := slog.New(slog.DiscardHandler)
	var stopping atomic.Bool
	return NewFrontend(cfg, p, ProxyOptions(cfg, logger), NewOwnPaths(cfg, p, http.NotFoundHandler(), http.NotFoundHandler(), &stopping), logger), w
}

// TestStoppedBeforeServe: a Shutdown or a Close that comes before Serve
// (a stop signal as the balancer starts) leaves Serve nothing to serve,
// on either engine: it returns at once, its listener closed. (The fasthttp
// engine's Shutdown found no listener yet and did nothing, and Serve
// then served for as long as the process lived.)
func TestStoppedBeforeServe(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, how := range []string{"Shutdown", "Close"} {
			t.Run(engine+"/"+how, func(t *testing.T) {
				cfg := config.Default()
				cfg.Engine = engine
				front, _ := newFront(cfg, "127.0.0.1:1")
				defer front.CloseIdleConnections()
				if how == "Shutdown" {
					front.Shutdown(context.Background())
				} else {
					front.Close()
				}
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				done := make(chan error, 1)
				go func() { done <- front.Serve(ln) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					front.Close()
					t.Fatal("Serve still serves 5 s after the frontend was stopped")
				}
				if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
					c.Close()
					t.Error("the listener still accepts connections")
				}
			})
		}
	}
}

// settleInFlight waits up to 10 s for w to hold no request.
func settleInFlight(t *testing.T, w *pool.Worker) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); w.InFlight() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker still holds %d requests", w.InFlight())
		}
	}
}

// TestReloadReadsTheFileAgain: a reload parses the same arguments again,
// so an invalid file is refused with the setting at fault and changes
// nothing, and a valid one that changes a start-only setting says so.
// runController starts a supervisor with n workers and its controller,
// as the balancer does with args; both stop when the test ends.
func runController(t *testing.T, args []string, n int, logger *slog.Logger) (context.Context, *supervisor.Supervisor, *Controller) {
	t.Helper()
	cfg, _, err := config.Parse("balancer", args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := WorkerSpec(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	sup := supervisor.New(spec, pool.New(new(pool.RoundRobin)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx, n) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx, sup, NewController(sup, args, cfg, logger, nil)
}

// configFile returns the path of a config file in a test's temporary
// directory, and a function that writes it.
func configFile(t *testing.T) (string, func(string)) {
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	return file, func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReloadReadsTheFileAgain(t *testing.T) {
	file, write := configFile(t)
	write("workers: 1\npolicy: round-robin\n")
	// No process is started: the cluster runs with no local workers, and
	// one remote upstream where nothing listens.
	args := []string{"-config", file, "-local-workers=false", "-upstream", "127.0.0.1:9"}
	var logs testutil.SyncBuffer
	ctx, sup, ctl := runController(t, args, 0, slog.New(slog.NewTextHandler(&logs, nil)))

	// Nothing to scale: no worker of its own may start.
	for _, err := range []error{ctl.ScaleBy(ctx, +1), ctl.ScaleBy(ctx, -1), ctl.Scale(ctx, 2)} {
		if !errors.Is(err, supervisor.ErrBadCount) || !strings.Contains(err.Error(), "local_workers") {
			t.Errorf("scale with no local workers: got %v; want a refusal naming local_workers", err)
		}
	}
	if n, err := sup.Workers(ctx); n != 0 || err != nil {
		t.Errorf("got %d local workers (%v); want 0", n, err)
	}

	write("workers: -3\n")
	err := ctl.Reload(ctx)
	if !errors.Is(err, admin.ErrInvalidConfig) || !strings.Contains(err.Error(), "workers") || !strings.Contains(err.Error(), "not reloaded") {
		t.Errorf("got %v; want the refusal naming workers", err)
	}

	write("workers: 1\npolicy: p2c\n")
	opCtx, opCancel := context.WithTimeout(ctx, 30*time.Second)
	defer opCancel()
	if err := ctl.ReloadWait(opCtx); err != nil {
		t.Fatalf("reload of a valid file: %v", err)
	}
	if got := logs.String(); !strings.Contains(got, "setting=policy") || !strings.Contains(got, "next start only") {
		t.Errorf("got log %q; want the policy change reported as applying at the next start", got)
	}
}

// TestStartOnlyChanges: every setting a reload does not apply is named
// when it changed, the reloadable ones never.
func TestStartOnlyChanges(t *testing.T) {
	running := config.Default()
	file := running
	file.AdminToken = "new"
	file.AccessLog = true
	file.Upstreams = []string{"127.0.0.1:9"}
	file.MaxRetries = 5
	file.HealthFall = 9    // reloadable
	file.Cmd = "node a.js" // reloadable
	got := startOnlyChanges(running, file)
	want := []string{"upstreams", "max_retries", "admin_token", "access_log"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	if got := startOnlyChanges(running, running); len(got) != 0 {
		t.Errorf("no change: got %v; want none", got)
	}
	// Each name is a key of the file, and each reloadable one too.
	keys := map[string]bool{}
	for i := range reflect.TypeFor[config.Config]().NumField() {
		name, _, _ := strings.Cut(reflect.TypeFor[config.Config]().Field(i).Tag.Get("yaml"), ",")
		keys[name] = true
	}
	for name := range reloadable {
		if !keys[name] {
			t.Errorf("reloadable %q is no setting", name)
		}
	}
}

// TestReloadRefusedWhileScaling: a reload asked for while a scale is
// under way is refused before it puts its settings in place, so the
// worker the scale starts meanwhile cannot get them. (It put them in
// place, found the supervisor busy, and put the old ones back: a worker
// started in between kept the refused settings.)
func TestReloadRefusedWhileScaling(t *testing.T) {
	file := filepath.Join(t.TempDir(), "balancer.yaml")
	// A worker that never opens its port: the scale waits for it.
	if err := os.WriteFile(file, []byte("cmd: exec sleep 30\nstart_timeout: 20s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", file, "-workers", "1", "-admin-listen", ""}
	ctx, sup, ctl := runController(t, args, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))

	scaleCtx, stopScale := context.WithCancel(ctx)
	scaled := make(chan error, 1)
	go func() { scaled <- ctl.Scale(scaleCtx, 2) }()
	defer func() { stopScale(); <-scaled }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n, _ := sup.Workers(ctx); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the scale never added worker 2")
		}
	}
	if err := os.WriteFile(file, []byte("cmd: exec sleep 31\nstart_timeout: 20s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := ctl.Reload(ctx)
	if !errors.Is(err, supervisor.ErrBusy) || strings.Contains(err.Error(), "settings before the reload") {
		t.Errorf("got %v; want ErrBusy, refused before any setting changed", err)
	}
	if err := ctl.RestartWorker(ctx, 1); !errors.Is(err, supervisor.ErrBusy) {
		t.Errorf("restart during the scale: got %v; want ErrBusy", err)
	}
}

// TestScaleKeepsReadyMinWorkers: scaling below ready_min_workers (the
// admin API's /scale, SIGTTOU) is refused, as such settings are at start:
// /readyz would answer 503 for good while the balancer serves.
func TestScaleKeepsReadyMinWorkers(t *testing.T) {
	args := []string{"-workers", "2", "-ready-min-workers", "2", "-cmd", "sleep 30"}
	ctx, sup, ctl := runController(t, args, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for name, err := range map[string]error{"Scale(1)": ctl.Scale(ctx, 1), "ScaleBy(-1)": ctl.ScaleBy(ctx, -1)} {
		if !errors.Is(err, supervisor.ErrBadCount) || !strings.Contains(err.Error(), "ready_min_workers") {
			t.Errorf("%s: got %v; want a refusal naming ready_min_workers", name, err)
		}
	}
	if n, err := sup.Workers(ctx); n != 2 || err != nil {
		t.Errorf("got %d workers (%v); want 2", n, err)
	}
}

// TestReloadKeepsReadyMinWorkers: a reload whose file lowers the worker
// count below the ready_min_workers in force is refused whole, as a
// scale is: ready_min_workers applies at the next start only, so the
// file's lower one did not help, and /readyz would have answered 503 for
// good.
func TestReloadKeepsReadyMinWorkers(t *testing.T) {
	file, write := configFile(t)
	write("workers: 2\nready_min_workers: 2\ncmd: exec sleep 30\nstart_timeout: 1s\n")
	args := []string{"-config", file, "-admin-listen", ""}
	ctx, sup, ctl := runController(t, args, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	write("workers: 1\nready_min_workers: 1\ncmd: exec sleep 30\nstart_timeout: 1s\n")
	err := ctl.Reload(ctx)
	if !errors.Is(err, admin.ErrInvalidConfig) || !strings.Contains(err.Error(), "ready_min_workers") || !strings.Contains(err.Error(), "not reloaded") {
		t.Errorf("got %v; want the reload refused, naming ready_min_workers", err)
	}
	if n, err := sup.Workers(ctx); n != 2 || err != nil {
		t.Errorf("got %d workers (%v); want 2", n, err)
	}
}

// TestFailedScaleUpPutsTheCountBack: a scale-up whose new worker does
// not come up is undone, as a reload's is: the operator's 500 (or the
// log line of a SIGTTIN) says the count is back, instead of leaving a
// worker in a crash loop behind an answer that said it failed.
func TestFailedScaleUpPutsTheCountBack(t *testing.T) {
	args := []string{"-workers", "1", "-cmd", "exec sleep 30", "-start-timeout", "1s", "-admin-listen", ""}
	ctx, sup, ctl := runController(t, args, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for name, scale := range map[string]func() error{
		"Scale(2)":    func() error { return ctl.Scale(ctx, 2) },
		"ScaleBy(+1)": func() error { return ctl.ScaleBy(ctx, +1) },
	} {
		err := scale()
		if err == nil || !strings.Contains(err.Error(), "back to 1") {
			t.Errorf("%s: got %v; want the failure, and the count back to 1", name, err)
		}
		if n, err := sup.Workers(ctx); n != 1 || err != nil {
			t.Errorf("%s: got %d workers (%v); want 1", name, n, err)
		}
	}
}

// TestScaleByNeverRemovesTheLastWorker: SIGTTOU at one worker is refused
// with a reason (it did nothing, and said nothing).
func TestScaleByNeverRemovesTheLastWorker(t *testing.T) {
	args := []string{"-workers", "1", "-cmd", "sleep 30"}
	ctx, sup, ctl := runController(t, args, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := ctl.ScaleBy(ctx, -1); !errors.Is(err, supervisor.ErrBadCount) || !strings.Contains(err.Error(), "last one") {
		t.Errorf("got %v; want a refusal saying the last worker is never removed", err)
	}
	if n, err := sup.Workers(ctx); n != 1 || err != nil {
		t.Errorf("got %d workers (%v); want 1", n, err)
	}
}
