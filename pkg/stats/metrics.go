package stats

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Metrics serves the pool in the Prometheus text format: the balancer-wide
// counters, one series per worker (label worker="ID"), the Go runtime and
// the balancer process. The pool is read at scrape time, so the request
// path pays nothing for it. Each call builds its own registry; nothing is
// registered globally. started is when the balancer started, for
// balancer_uptime_seconds.
func Metrics(p *pool.Pool, started time.Time) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(p, started, time.Now),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that fails (the process collector where /proc
		// is missing) must not hide the others; the failures are
		// counted in promhttp_metric_handler_errors_total instead.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
}

const namespace = "balancer"

func workerDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "worker", name), help,
		append([]string{"worker"}, labels...), nil)
}

func poolDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, nil, nil)
}

var (
	descWorkerRequests = workerDesc("requests_total",
		"Responses proxied from the worker, over all its processes.")
	descWorkerErrors = workerDesc("errors_total",
		"Requests the worker failed (refused, reset, timed out), whether or not they were retried elsewhere.")
	descWorkerRetries = workerDesc("retries_total",
		"Requests that failed on the worker and were then retried on another worker.")
	descWorkerInFlight = workerDesc("in_flight",
		"Requests being forwarded to the worker now.")
	descWorkerRestarts = workerDesc("restarts_total",
		"Times the worker's process was replaced.")
	descWorkerUp = workerDesc("up",
		"1 when the worker is up and gets requests, 0 otherwise.")
	descWorkerState = workerDesc("state",
		"The worker's current state (starting, up, down, backoff, stopped): 1 on the series of that state; the other states have no series.",
		"state")
	descWorkerCPU = workerDesc("cpu_percent",
		"Last sampled CPU use of the worker's current process tree, in percent of one core (100 = one core busy); absent while no process runs.")
	descWorkerRSS = workerDesc("rss_bytes",
		"Last sampled resident memory of the worker's current process tree, in bytes; absent while no process runs.")
	descWorkerLatency = workerDesc("request_duration_seconds",
		"Time from forwarding a request to the worker to receiving the response headers (with -engine fasthttp, which reads an answer whole: its end), since the balancer started.")

	descRequests = poolDesc("requests_total",
		"Requests the balancer answered, including its own error responses.")
	descErrors = poolDesc("errors_total",
		"Requests answered with an error made by the balancer (502, 503, 504).")
	descRetries = poolDesc("retries_total",
		"Retries of a failed request on another worker.")
	descWaiting = poolDesc("waiting_requests",
		"Requests waiting now for a worker on its way up (every worker down or starting, one restarting).")
	descClients = poolDesc("client_connections",
		"Client connections open now.")
	descMaxClients = poolDesc("client_connections_max",
		"The bound on client connections (max_conns): past it, new ones wait to be accepted.")
	descWorkers = poolDesc("workers",
		"Worker slots in the pool, whatever their state.")
	descUptime = poolDesc("uptime_seconds",
		"Seconds since the balancer started.")
)

// collector reads the pool at every scrape. It holds no state of its own.
type collector struct {
	pool    *pool.Pool
	started time.Time
	now     func() time.Time
}

func newCollector(p *pool.Pool, started time.Time, now func() time.Time) *collector {
	return &collector{pool: p, started: started, now: now}
}

var _ prometheus.Collector = (*collector)(nil)

// Describe sends every descriptor, so the registry checks each scrape
// against them.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descWorkerRequests, descWorkerErrors, descWorkerRetries, descWorkerInFlight,
		descWorkerRestarts, descWorkerUp, descWorkerState, descWorkerCPU, descWorkerRSS,
		descWorkerLatency, descRequests, descErrors, descRetries, descWaiting, descClients, descMaxClients, descWorkers, descUptime,
	} {
		ch <- d
	}
}

// Collect reads the pool. The Must constructors below fail only on a
// label count that does not match its descriptor, a programming error.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	ws := c.pool.Workers()
	counter(descRequests, c.pool.Requests())
	counter(descErrors, c.pool.Errors())
	counter(descRetries, c.pool.Retries())
	gauge(descWaiting, float64(c.pool.Waiting()))
	open, most := c.pool.Clients()
	gauge(descClients, float64(open))
	gauge(descMaxClients, float64(most))
	gauge(descWorkers, float64(len(ws)))
	gauge(descUptime, c.now().Sub(c.started).Seconds())

	for _, w := range ws {
		id := strconv.Itoa(w.ID())
		counter(descWorkerRequests, w.Requests(), id)
		counter(descWorkerErrors, w.Errors(), id)
		counter(descWorkerRetries, w.Retries(), id)
		gauge(descWorkerInFlight, float64(w.InFlight()), id)
		counter(descWorkerRestarts, w.Restarts(), id)

		state := w.State()
		up := 0.0
		if state == pool.Up {
			up = 1
		}
		gauge(descWorkerUp, up, id)
		gauge(descWorkerState, 1, id, state.String())

		if proc := w.Process(); proc != nil && !w.Remote() {
			// (A remote upstream's process is none of ours to measure.)
			cpu, rss := proc.Usage()
			gauge(descWorkerCPU, cpu, id)
			gauge(descWorkerRSS, float64(rss), id)
		}

		buckets := make(map[float64]uint64)
		count, sum := w.Latency().Cumulative(func(upper time.Duration, cumulative uint64) {
			buckets[upper.Seconds()] = cumulative
		})
		ch <- prometheus.MustNewConstHistogram(descWorkerLatency, count, sum.Seconds(), buckets, id)
	}
}
