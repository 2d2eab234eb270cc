// Package health runs the active health checks of one worker process and
// turns their results into the worker's state in the pool.
//
// A check is an HTTP GET of a path (2xx or 3xx passes), an OPTIONS * that
// any answer passes (for workers whose paths are not known), or a TCP
// connect.
//
// A starting worker is checked every few milliseconds so that it takes
// traffic as soon as it listens; an up worker at the configured interval.
// Rise passes in a row mark it up, fall failures in a row mark it down.
// State changes are compare-and-swap, so a check never undoes what the
// supervisor did meanwhile (a process exit), and each transition is logged
// once.
//
// The package does not start, stop or restart processes: Monitor reports
// a worker that went down through a callback, and the caller decides.
package health
