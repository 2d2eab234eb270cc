package supervisor

import "errors"

// Errors of the control operations (Reload, Scale, RestartWorker), for
// callers such as the admin API to test with errors.Is.
var (
	// ErrBusy: another reload, scale or restart is under way.
	ErrBusy = errors.New("another operation is under way")
	// ErrNoSuchWorker: no worker has that id.
	ErrNoSuchWorker = errors.New("no such worker")
	// ErrBadCount: a worker count out of bounds (1 to pool.MaxWorkers).
	ErrBadCount = errors.New("worker count out of bounds")
	// ErrStopped: the supervisor is not running.
	ErrStopped = errors.New("supervisor stopped")
)
