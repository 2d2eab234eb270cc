// Package pool holds the workers as the proxy sees them: their address,
// state and counters, and the policies that pick one for a request.
//
// It is where the two paths of the balancer meet. The process path (the
// supervisor and the health checks) writes a worker's pid, address and
// state; the request path (the proxy) picks workers and counts requests.
// Neither path imports the other; both import this package.
//
// Counters and state are atomics: picking a worker and counting a request
// take no lock and allocate nothing. A mutex guards only changes of
// membership (adding or removing a worker), which publish a new snapshot
// of the list.
package pool
