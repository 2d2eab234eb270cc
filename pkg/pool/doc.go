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
// of the list. A pick that finds no worker up while one of the
// balancer's own is on its way up can wait for it (PickWait): each
// change of a worker's state wakes the waiters, so the wait costs
// nothing while workers are up.
package pool
