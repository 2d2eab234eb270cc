// Package stats reports the cluster: the balancer-wide counters and one
// row per worker, as JSON at the stats path.
//
// Counters come from the pool. CPU and memory of each worker process are
// sampled in the background by a Sampler through gopsutil, once per
// interval, so a request for /stats never waits on /proc. The package
// only reads; it changes nothing in the pool.
package stats
