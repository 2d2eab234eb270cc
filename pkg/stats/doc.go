// Package stats reports the cluster: the balancer-wide counters and one
// row per worker, as JSON at the stats path.
//
// Everything comes from the pool, including the CPU and memory of each
// worker process, which the supervisor samples in the background, so a
// request for /stats never waits on /proc. The package only reads; it
// changes nothing in the pool.
package stats
