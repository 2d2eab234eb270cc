// Package stats shows the cluster: the balancer-wide counters and one row
// per worker, as JSON at the stats path, as a live HTML dashboard to a
// browser (embedded, loading nothing from elsewhere), and as Prometheus
// metrics. It also holds the client side of `balancer status`: Fetch and
// WriteTable.
//
// Everything comes from the pool, including the CPU and memory of each
// worker process, which the supervisor samples in the background, so a
// request for /stats or /metrics never waits on /proc. The package only
// reads; it changes nothing in the pool.
package stats
