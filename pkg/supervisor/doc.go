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
// Run as PID 1 (in a container), the balancer reaps every child: one
// goroutine collects each exit with wait4(-1) at every SIGCHLD (and every
// second, as a safety net), hands the workers' statuses to their waiters
// and drops the others, the orphans a -cmd worker left behind; nothing
// else in the process may then wait for a child of its own. Outside PID 1
// it is no child subreaper and each worker's exec.Cmd.Wait reaps it. A
// PID 1 gets no default signal action, but the balancer handles SIGTERM
// anyway: it stops the workers' process groups and exits, and the kernel
// kills what is left in the namespace.
//
// One goroutine owns all of the supervisor's state; process exits and
// timers reach it through a channel. The package writes a worker's pid,
// address and state into the pool and knows nothing of requests.
package supervisor
