// Package demo is the course's demo backend as a library: the small Fiber
// app that the "one process, before cluster" baseline (backend/main.go) runs
// on :8080 and that every worker of the balancer runs on its own loopback
// port when the balancer re-executes itself as `balancer backend`.
//
// It owns the HTTP surface of a worker (/operacion-simple, /operacion-compleja,
// /dead, /health), how a worker finds its address and id in the environment
// (PORT, WORKER_ID), its listen/serve/graceful-shutdown loop, and a parent
// watch that lets an orphaned worker notice its balancer is gone.
//
// It does not spawn, supervise or restart anything, and it knows nothing of
// the proxy: a worker is just an HTTP server that may die.
//
// Caveats:
//   - /operacion-compleja burns CPU on the request goroutine on purpose; that
//     is the point of the course's benchmark. Its ?n= is bounded by
//     Config.MaxN so one request cannot pin a core for minutes.
//   - /dead really ends the process (exit code 1) once its response has left.
//     That is the crashing-worker demo; never expose it outside a lab.
//   - WatchParent polls os.Getppid, which is only meaningful on Unix-like
//     systems where an orphan is re-parented.
package demo
