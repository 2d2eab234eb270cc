package stats

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// What real clients send.
const (
	acceptChrome  = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
	acceptFirefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	acceptCurl    = "*/*"
)

func TestHandlerNegotiates(t *testing.T) {
	tests := []struct {
		name   string
		query  string
		accept []string // one element per Accept header line
		html   bool
	}{
		{name: "chrome", accept: []string{acceptChrome}, html: true},
		{name: "firefox", accept: []string{acceptFirefox}, html: true},
		{name: "curl", accept: []string{acceptCurl}, html: false},
		{name: "no Accept", html: false},
		{name: "application/json", accept: []string{"application/json"}, html: false},
		{name: "json listed first", accept: []string{"application/json, text/html"}, html: false},
		{name: "html listed first", accept: []string{"text/html, application/json"}, html: true},
		{name: "json preferred by quality", accept: []string{"text/html;q=0.5, application/json"}, html: false},
		{name: "html preferred by quality", accept: []string{"application/json;q=0.4, text/html"}, html: true},
		{name: "html refused", accept: []string{"text/html;q=0, */*"}, html: false},
		{name: "upper case", accept: []string{"Text/HTML"}, html: true},
		{name: "two header lines", accept: []string{"text/plain", "text/html"}, html: true},
		{name: "broken quality ignored", accept: []string{"text/html;q=high"}, html: false},
		{name: "format=html over curl", query: "?format=html", accept: []string{acceptCurl}, html: true},
		{name: "format=html without Accept", query: "?format=html", html: true},
		{name: "format=json over browser", query: "?format=json", accept: []string{acceptChrome}, html: false},
		{name: "unknown format negotiates", query: "?format=xml", accept: []string{acceptChrome}, html: true},
	}
	p := pool.New(new(pool.RoundRobin))
	p.Add(pool.NewWorker(1))
	h := Handler(p, time.Now())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/stats"+tt.query, nil)
			for _, a := range tt.accept {
				req.Header.Add("Accept", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("got status %d; want 200", rec.Code)
			}
			ct := rec.Header().Get("Content-Type")
			if tt.html {
				if ct != "text/html; charset=utf-8" {
					t.Errorf("got Content-Type %q; want text/html; charset=utf-8", ct)
				}
				if !bytes.Equal(rec.Body.Bytes(), dashboardHTML) {
					t.Errorf("got a body of %d bytes; want the embedded dashboard (%d bytes)", rec.Body.Len(), len(dashboardHTML))
				}
				return
			}
			if ct != "application/json" {
				t.Errorf("got Content-Type %q; want application/json", ct)
			}
			var snap struct {
				Workers []struct {
					ID int `json:"id"`
				} `json:"workers"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &snap); err != nil {
				t.Fatalf("body is not the JSON snapshot: %v", err)
			}
			if len(snap.Workers) != 1 || snap.Workers[0].ID != 1 {
				t.Errorf("got workers %+v; want worker 1", snap.Workers)
			}
		})
	}
}

func TestDashboardHeaders(t *testing.T) {
	h := Handler(pool.New(new(pool.RoundRobin)), time.Now())
	for _, method := range []string{"GET", "HEAD"} {
		t.Run(method, func(t *testing.T) {
			req := httptest.NewRequest(method, "/stats", nil)
			req.Header.Set("Accept", acceptChrome)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			want := map[string]string{
				"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
				"Content-Type":            "text/html; charset=utf-8",
				"X-Content-Type-Options":  "nosniff",
				"Cache-Control":           "no-store",
				"Vary":                    "Accept",
				"Content-Length":          strconv.Itoa(len(dashboardHTML)),
			}
			for key, v := range want {
				if got := rec.Header().Get(key); got != v {
					t.Errorf("got %s %q; want %q", key, got, v)
				}
			}
		})
	}
	// The JSON answer varies on Accept too, or a cache could serve it to a
	// browser.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/stats", nil))
	if got := rec.Header().Get("Vary"); got != "Accept" {
		t.Errorf("JSON: got Vary %q; want Accept", got)
	}
}

// TestDashboardSelfContained scans the embedded page for anything that
// would load from another site: an absolute URL, a protocol-relative one,
// a CSS import. The Content-Security-Policy would block such a load; this
// finds it before a browser has to.
func TestDashboardSelfContained(t *testing.T) {
	forbidden := []*regexp.Regexp{
		regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"'<>)]*`),          // http://host/, wss://host/...
		regexp.MustCompile(`(?i)\b(?:src|href|action|poster)\s*=\s*["']?//`), // <script src="//host/...">
		regexp.MustCompile(`(?i)url\(\s*["']?\s*//`),                         // background: url(//host/...)
		regexp.MustCompile(`(?i)@import\b`),
		regexp.MustCompile(`(?i)<(?:script|img|iframe|object|embed|audio|video|source)\b[^>]*\bsrc\s*=`),
	}
	for i, line := range strings.Split(string(dashboardHTML), "\n") {
		for _, re := range forbidden {
			if m := re.FindString(line); m != "" {
				t.Errorf("dashboard.html:%d: got %q; want no reference to another site", i+1, m)
			}
		}
	}
	// The one <link> is the empty icon, a data: URL.
	for _, m := range regexp.MustCompile(`(?i)<link\b[^>]*>`).FindAllString(string(dashboardHTML), -1) {
		if !strings.Contains(m, `href="data:`) {
			t.Errorf("got %s; want only data: links", m)
		}
	}
}

func FuzzPrefersHTML(f *testing.F) {
	for _, s := range []string{acceptChrome, acceptFirefox, acceptCurl, "", "text/html;q=0.5, application/json",
		"text/html;q=", ";;,,", "text/html;q=1.5", "TEXT/HTML;Q=0.9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		got := prefersHTML([]string{accept})
		if got && !strings.Contains(strings.ToLower(accept), "text/html") {
			t.Errorf("prefersHTML(%q) = true; want false without text/html", accept)
		}
	})
}

// chromium returns the browser to drive. Without one the test is skipped,
// except under CI, which installs it (Debian package chromium).
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "google-chrome-stable", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	const msg = "no Chromium: /usr/bin/chromium is missing and no chromium or google-chrome is on PATH " +
		"(on Debian: apt-get install -y chromium)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI must install it")
	}
	t.Skip(msg)
	return ""
}

// TestDashboardInChromium loads the dashboard in a real headless browser
// and checks that it shows the workers and follows their counters live.
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	// Registered first, so it runs last: after the browser, the tab and the
	// server below are gone. IgnoreCurrent keeps this test's check to what
	// it started, whatever the package's other tests leave running.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	execPath := chromium(t)

	p := pool.New(new(pool.RoundRobin)) // also the longest policy name
	// record counts n responses of worker w, as the proxy does.
	record := func(w *pool.Worker, n int, latency time.Duration) {
		for k := range n {
			w.End(w.Begin(), true, false)
			p.CountRequest(true)
			d := latency * time.Duration(1+k%4)
			if k%25 == 24 {
				d *= 8 // a slow tail, for p99
			}
			w.Latency().Observe(d, time.Now())
		}
	}
	start := time.Now()
	workers := make([]*pool.Worker, 3)
	for i := range workers {
		id := i + 1
		w := pool.NewWorker(id)
		proc := pool.NewProcess(41000+id, fmt.Sprintf("127.0.0.1:%d", 40000+id), start.Add(-time.Duration(id)*37*time.Minute))
		proc.SetUsage(float64(4+9*i)+0.3, uint64(21+6*i)<<20)
		w.SetProcess(proc, pool.Up)
		record(w, 40*id, time.Duration(id)*1500*time.Microsecond)
		p.Add(w)
		workers[i] = w
	}
	w2, w3 := workers[1], workers[2]
	w3.AddRestart()
	w3.End(w3.Begin(), false, true)
	p.CountRequest(false)
	p.CountRetry()
	p.SetClients(func() int64 { return 64 }, 9964)

	var failing atomic.Bool // makes the stats path answer 503, as a dead balancer would
	mux := http.NewServeMux()
	stats := Handler(p, start.Add(-time.Hour-2*time.Minute))
	mux.Handle("/stats", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		stats.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root in a container has no usable sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // /dev/shm is small in containers
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 768), // a laptop screen
	)
	// Ends the browser process and waits for it, before TempDir's cleanup
	// removes its profile.
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()

	// Start the browser with no deadline (a deadline on the first Run would
	// end the browser with it), then bound the rest.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", execPath, err)
	}
	// Uncaught exceptions, console errors and CSP reports fail the test;
	// network errors do not, since the test makes the server fail on purpose.
	var (
		mu       sync.Mutex
		problems []string
	)
	messages := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if (m.IsException() || m.Type == chromedp.ConsoleError) && m.Source != "network" {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	defer func() { cancelTab(); <-consoleDone }()

	wait, cancelWait := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWait()
	if err := chromedp.Do(wait, chromedp.Navigate(srv.URL+"/stats")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(wait, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(wait, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	digits := func(s string) int64 {
		n, _ := strconv.ParseInt(strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, s), 10, 64)
		return n
	}

	poll("3 worker rows", `document.querySelectorAll('tr[data-worker]').length === 3`)
	const cell = `tr[data-worker="2"] td[data-field="requests"]`
	before := digits(text(cell))
	if want := w2.Requests(); before != want {
		t.Fatalf("worker 2 requests cell: got %d; want %d", before, want)
	}

	record(w2, 25, 2*time.Millisecond)
	want := before + 25
	poll(fmt.Sprintf("worker 2 to show %d requests", want),
		fmt.Sprintf(`(document.querySelector('%s').textContent.replace(/\D/g, '') === '%d')`, cell, want))

	for sel, want := range map[string]string{
		"#policy":      "round-robin",
		"#workers-up":  "3 / 3",
		"#connections": "64 / 9,964",
		`tr[data-worker="2"] td[data-field="port"]`:     "40002",
		`tr[data-worker="2"] td[data-field="pid"]`:      "41002",
		`tr[data-worker="1"] .badge`:                    "up",
		`tr[data-worker="3"] td[data-field="restarts"]`: "1",
		`tr[data-worker="2"] td[data-field="uptime"]`:   "1h14m",
		`tr[data-worker="2"] td[data-field="rss"]`:      "27.0 MiB",
	} {
		if got := text(sel); got != want {
			t.Errorf("%s: got %q; want %q", sel, got, want)
		}
	}

	// No card's figure is cut off, on a laptop nor on a phone: the longest
	// policy name (round-robin), the uptime and the counters fit their cards.
	for _, width := range []int64{1366, 390, 320} {
		if _, err := chromedp.Call(wait, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: width, Height: 800, DeviceScaleFactor: 1, Mobile: width < 800,
		}); err != nil {
			t.Fatalf("set width %d: %v", width, err)
		}
		cut, err := chromedp.Run(wait, chromedp.Evaluate[string](
			`[...document.querySelectorAll('.cards .value')].filter(e => e.scrollWidth > e.clientWidth).map(e => e.id + ': ' + e.textContent).join(', ')`))
		if err != nil {
			t.Fatalf("measure the cards at width %d: %v", width, err)
		}
		if cut != "" {
			t.Errorf("at %d px wide, cut off: %s", width, cut)
		}
	}
	if _, err := chromedp.Call(wait, emulation.ClearDeviceMetricsOverride, cdp.Empty{}); err != nil {
		t.Fatalf("clear the width: %v", err)
	}

	// A few seconds of uneven traffic, one step per poll of the page, so
	// the rates and graphs in the screenshot have something to show.
	polls := func() int64 {
		n, err := chromedp.Run(wait, chromedp.Evaluate[string](`document.body.dataset.polls || '0'`))
		if err != nil {
			t.Fatalf("read poll count: %v", err)
		}
		return digits(n)
	}
	for step := range 6 {
		n := polls()
		for i, w := range workers {
			record(w, (step%3+1)*(i+2)*3, time.Duration(i+1)*time.Millisecond)
		}
		poll("the next poll", fmt.Sprintf(`Number(document.body.dataset.polls) > %d`, n))
	}
	if got := text(`tr[data-worker="2"] td[data-field="rate"]`); got == "–" || got == "" {
		t.Errorf("worker 2 req/s: got %q; want a rate", got)
	}
	if pts, err := chromedp.Run(wait, chromedp.Evaluate[string](
		`document.querySelector('tr[data-worker="2"] .spark polyline').getAttribute('points')`)); err != nil || pts == "" {
		t.Errorf("worker 2 sparkline: got points %q (%v); want a line", pts, err)
	}

	screenshot(t, wait, "")
	if _, err := chromedp.Call(wait, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Errorf("emulate dark mode: %v", err)
	} else {
		screenshot(t, wait, "-dark")
	}

	// The balancer goes away and comes back: the banner shows, then goes.
	failing.Store(true)
	poll("the disconnected banner", `!document.getElementById('banner').hidden`)
	if got := text("#banner"); !strings.Contains(got, "Disconnected") {
		t.Errorf("banner: got %q; want it to say Disconnected", got)
	}
	failing.Store(false)
	poll("the banner to go", `document.getElementById('banner').hidden`)

	// A worker taken out for good (a scale-down) whose process still
	// finishes its requests reads "stopping", as in balancer status.
	w3.SetState(pool.Stopped)
	poll("worker 3 to read stopping", `document.querySelector('tr[data-worker="3"] .badge').textContent === 'stopping'`)

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser console: %s", p)
	}
}

// screenshot saves the whole page as PNG, to DASHBOARD_SCREENSHOT (with
// suffix before its extension) when set, else into the test's temporary
// directory, which is removed after the test.
func screenshot(t *testing.T, ctx context.Context, suffix string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG, not JPEG
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if env := os.Getenv("DASHBOARD_SCREENSHOT"); env != "" {
		path = env
	}
	ext := filepath.Ext(path)
	path = strings.TrimSuffix(path, ext) + suffix + ext
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}
