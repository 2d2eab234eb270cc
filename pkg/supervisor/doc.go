// Package supervisor owns the worker processes: it spawns one per slot,
// watches it, runs its health checks, and restarts it with the same
// WORKER_ID when it dies, waiting longer after each crash in a row.
//
// Each worker gets PORT (a free loopback port, new at every start) and
// WORKER_ID (1..N, kept across restarts) in its environment, and
// GOMAXPROCS=1 unless the balancer's own environment sets GOMAXPROCS.
// Workers run in a process group of their own, so a Ctrl-C in the
// terminal reaches the balancer only and the balancer decides when they
// stop. Each is started with a parent-death signal from one locked OS
// thread (golang/go#27505: the signal follows the thread that forked, not
// the process), so no worker outlives a balancer that is killed.
//
// One goroutine owns all of the supervisor's state; process exits and
// timers reach it through a channel. The package writes a worker's pid,
// address and state into the pool and knows nothing of requests.
package supervisor
