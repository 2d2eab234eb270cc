package stats

import (
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// metricsPool is two workers with known counts and a third never started:
// worker 1 answered 3 requests (5, 5 and 50 ms) and failed 1 that was
// retried; worker 2 answered 1 (2 ms), restarted twice and is down;
// worker 3 has no process.
func metricsPool(t *testing.T, now time.Time) *pool.Pool {
	t.Helper()
	p := pool.New(new(pool.RoundRobin))

	w1 := pool.NewWorker(1)
	proc1 := pool.NewProcess(4242, "127.0.0.1:4001", now.Add(-time.Minute))
	proc1.SetUsage(12.5, 9<<20)
	w1.SetProcess(proc1, pool.Up)
	for _, d := range []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond} {
		w1.End(w1.Begin(), true, false)
		w1.Latency().Observe(d, now)
	}
	w1.End(w1.Begin(), false, true)
	w1.Begin() // one request still in flight
	p.Add(w1)

	w2 := pool.NewWorker(2)
	w2.SetProcess(pool.NewProcess(4243, "127.0.0.1:4002", now.Add(-time.Second)), pool.Up)
	w2.End(w2.Begin(), true, false)
	w2.Latency().Observe(2*time.Millisecond, now)
	w2.AddRestart()
	w2.AddRestart()
	w2.SetState(pool.Down)
	p.Add(w2)

	p.Add(pool.NewWorker(3))
	p.Add(pool.NewRemoteWorker(1025, "10.0.0.9:80"))

	for range 4 { // what the proxy counts for the responses above
		p.CountRequest(true)
	}
	p.CountRequest(false)
	p.CountRetry()
	p.SetClients(func() int64 { return 7 }, 92)
	return p
}

// scrape serves h once and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d; want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("got Content-Type %q; want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return mfs
}

// value returns the value of the series of family name whose labels
// include want, and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func TestMetricsPerWorker(t *testing.T) {
	now := time.Now()
	mfs := scrape(t, Metrics(metricsPool(t, now), now.Add(-time.Hour)))

	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
		absent bool
	}{
		{name: "w1 requests", metric: "balancer_worker_requests_total", labels: map[string]string{"worker": "1"}, want: 3},
		{name: "w1 errors", metric: "balancer_worker_errors_total", labels: map[string]string{"worker": "1"}, want: 1},
		{name: "w1 retries", metric: "balancer_worker_retries_total", labels: map[string]string{"worker": "1"}, want: 1},
		{name: "w1 in flight", metric: "balancer_worker_in_flight", labels: map[string]string{"worker": "1"}, want: 1},
		{name: "w1 restarts", metric: "balancer_worker_restarts_total", labels: map[string]string{"worker": "1"}, want: 0},
		{name: "w1 up", metric: "balancer_worker_up", labels: map[string]string{"worker": "1"}, want: 1},
		{name: "w1 state up", metric: "balancer_worker_state", labels: map[string]string{"worker": "1", "state": "up"}, want: 1},
		{name: "w1 no state down", metric: "balancer_worker_state", labels: map[string]string{"worker": "1", "state": "down"}, absent: true},
		{name: "w1 cpu", metric: "balancer_worker_cpu_percent", labels: map[string]string{"worker": "1"}, want: 12.5},
		{name: "w1 rss", metric: "balancer_worker_rss_bytes", labels: map[string]string{"worker": "1"}, want: 9 << 20},

		{name: "w2 requests", metric: "balancer_worker_requests_total", labels: map[string]string{"worker": "2"}, want: 1},
		{name: "w2 errors", metric: "balancer_worker_errors_total", labels: map[string]string{"worker": "2"}, want: 0},
		{name: "w2 in flight", metric: "balancer_worker_in_flight", labels: map[string]string{"worker": "2"}, want: 0},
		{name: "w2 restarts", metric: "balancer_worker_restarts_total", labels: map[string]string{"worker": "2"}, want: 2},
		{name: "w2 up", metric: "balancer_worker_up", labels: map[string]string{"worker": "2"}, want: 0},
		{name: "w2 state down", metric: "balancer_worker_state", labels: map[string]string{"worker": "2", "state": "down"}, want: 1},
		{name: "w2 cpu before a sample", metric: "balancer_worker_cpu_percent", labels: map[string]string{"worker": "2"}, want: 0},

		{name: "w3 requests", metric: "balancer_worker_requests_total", labels: map[string]string{"worker": "3"}, want: 0},
		{name: "w3 up", metric: "balancer_worker_up", labels: map[string]string{"worker": "3"}, want: 0},
		{name: "w3 state starting", metric: "balancer_worker_state", labels: map[string]string{"worker": "3", "state": "starting"}, want: 1},
		{name: "w3 no cpu without process", metric: "balancer_worker_cpu_percent", labels: map[string]string{"worker": "3"}, absent: true},
		{name: "w3 no rss without process", metric: "balancer_worker_rss_bytes", labels: map[string]string{"worker": "3"}, absent: true},
		{name: "remote: no cpu of a process not ours", metric: "balancer_worker_cpu_percent", labels: map[string]string{"worker": "1025"}, absent: true},
		{name: "remote: no rss", metric: "balancer_worker_rss_bytes", labels: map[string]string{"worker": "1025"}, absent: true},

		{name: "pool requests", metric: "balancer_requests_total", want: 5},
		{name: "pool errors", metric: "balancer_errors_total", want: 1},
		{name: "pool retries", metric: "balancer_retries_total", want: 1},
		{name: "pool workers", metric: "balancer_workers", want: 4},
		{name: "pool waiting", metric: "balancer_waiting_requests", want: 0},
		{name: "client connections", metric: "balancer_client_connections", want: 7},
		{name: "client connections' bound", metric: "balancer_client_connections_max", want: 92},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := value(mfs, tt.metric, tt.labels)
			if tt.absent {
				if ok {
					t.Errorf("got %s%v = %v; want no series", tt.metric, tt.labels, got)
				}
				return
			}
			if !ok {
				t.Fatalf("got no series %s%v; want %v", tt.metric, tt.labels, tt.want)
			}
			if got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}

	if up, _ := value(mfs, "balancer_uptime_seconds", nil); up < 3600 {
		t.Errorf("got balancer_uptime_seconds %v; want at least 3600", up)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if mfs[name] == nil {
			t.Errorf("got no %s; want the Go and process collectors", name)
		}
	}
}

func TestMetricsHistogram(t *testing.T) {
	now := time.Now()
	mfs := scrape(t, Metrics(metricsPool(t, now), now))
	mf := mfs["balancer_worker_request_duration_seconds"]
	if mf == nil {
		t.Fatal("got no balancer_worker_request_duration_seconds")
	}
	if mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("got type %v; want HISTOGRAM", mf.GetType())
	}

	tests := []struct {
		name    string
		worker  string
		count   uint64
		sum     float64
		le      float64 // a bucket bound to check ...
		leCount uint64  // ... and its cumulative count
	}{
		// The buckets end at powers of two of microseconds: 5 ms is
		// under 8.192 ms, 50 ms under 65.536 ms, 2 ms under 2.048 ms.
		{name: "three responses", worker: "1", count: 3, sum: 0.060, le: 0.008192, leCount: 2},
		{name: "one response", worker: "2", count: 1, sum: 0.002, le: 0.002048, leCount: 1},
		{name: "none", worker: "3", count: 0, sum: 0, le: 0.002048, leCount: 0},
	}
	// Every worker has the same buckets, whatever its counts, or a sum
	// across workers by le (histogram_quantile's) mixes bounds.
	var bounds []float64
	for i, m := range mf.GetMetric() {
		var these []float64
		for _, b := range m.GetHistogram().GetBucket() {
			these = append(these, b.GetUpperBound())
		}
		if i == 0 {
			bounds = these
		} else if !slices.Equal(these, bounds) {
			t.Errorf("worker %d's buckets %v differ from the first worker's %v", i+1, these, bounds)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h *dto.Histogram
			for _, m := range mf.GetMetric() {
				if hasLabels(m, map[string]string{"worker": tt.worker}) {
					h = m.GetHistogram()
				}
			}
			if h == nil {
				t.Fatalf("got no histogram for worker %s", tt.worker)
			}
			if got := h.GetSampleCount(); got != tt.count {
				t.Errorf("count: got %v; want %v", got, tt.count)
			}
			if got := h.GetSampleSum(); math.Abs(got-tt.sum) > 1e-9 {
				t.Errorf("sum: got %v; want %v", got, tt.sum)
			}
			var prev uint64
			found := false
			for _, b := range h.GetBucket() {
				c := b.GetCumulativeCount()
				if c < prev {
					t.Errorf("bucket le=%v: got cumulative %v after %v; want non-decreasing", b.GetUpperBound(), c, prev)
				}
				prev = c
				if math.IsInf(b.GetUpperBound(), 1) {
					continue
				}
				if math.Abs(b.GetUpperBound()-tt.le) < 1e-12 {
					found = true
					if c != tt.leCount {
						t.Errorf("bucket le=%v: got %v; want %v", tt.le, c, tt.leCount)
					}
				}
			}
			if !found {
				t.Errorf("got no bucket le=%v; want one with %v", tt.le, tt.leCount)
			}
			if tt.count > 0 && prev != tt.count {
				t.Errorf("last bucket: got %v; want the count %v", prev, tt.count)
			}
		})
	}
}

func TestMetricsWorkersAddUp(t *testing.T) {
	now := time.Now()
	p := metricsPool(t, now)
	mfs := scrape(t, Metrics(p, now))
	var sum float64
	for _, m := range mfs["balancer_worker_requests_total"].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	var workers int64
	for _, w := range p.Workers() {
		workers += w.Requests()
	}
	if sum != float64(workers) {
		t.Errorf("got sum of balancer_worker_requests_total %v; want %v, the workers' requests", sum, workers)
	}
	// The pool also counts the balancer's own error answers, which no
	// worker gave: successes plus errors add up to the total.
	total, _ := value(mfs, "balancer_requests_total", nil)
	errs, _ := value(mfs, "balancer_errors_total", nil)
	if sum+errs != total {
		t.Errorf("got workers %v + balancer errors %v; want balancer_requests_total %v", sum, errs, total)
	}
}

func TestMetricsLint(t *testing.T) {
	now := time.Now()
	problems, err := testutil.CollectAndLint(newCollector(metricsPool(t, now), now, time.Now))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsUptimeClock(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newCollector(pool.New(new(pool.RoundRobin)), started, func() time.Time { return started.Add(90 * time.Second) })
	want := `# HELP balancer_uptime_seconds Seconds since the balancer started.
# TYPE balancer_uptime_seconds gauge
balancer_uptime_seconds 90
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "balancer_uptime_seconds"); err != nil {
		t.Error(err)
	}
}

func TestMetricsHandlersIndependent(t *testing.T) {
	// Two handlers in one process must not collide in a shared registry.
	now := time.Now()
	a := scrape(t, Metrics(metricsPool(t, now), now))
	b := scrape(t, Metrics(pool.New(new(pool.RoundRobin)), now))
	if got, _ := value(a, "balancer_workers", nil); got != 4 {
		t.Errorf("first handler: got balancer_workers %v; want 4", got)
	}
	if got, _ := value(b, "balancer_workers", nil); got != 0 {
		t.Errorf("second handler: got balancer_workers %v; want 0", got)
	}
}
