// Package limits tells the balancer's own shortages from its workers'
// failures, and sizes what it accepts to the descriptors it has.
//
// A socket the balancer cannot open (its descriptors, the kernel's, or
// memory ran out) says nothing about the worker it was for: a health
// check or a connection that fails so must not mark the worker down,
// which would have it replaced and its requests in flight cut. The
// descriptors are budgeted instead (MaxConns): a client connection may
// need one to a worker, and health checks, restarts and the admin API
// need a few of their own.
package limits

import (
	"errors"
	"syscall"
)

// Exhausted reports whether err is a shortage on the balancer's side:
// out of descriptors (EMFILE, ENFILE), of socket buffers or memory
// (ENOBUFS, ENOMEM), or of local ports (EADDRNOTAVAIL).
func Exhausted(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Reserve is the number of descriptors MaxConns leaves for what is not a
// client's: the listeners, the admin API, the log, and PerWorker more for
// each worker (its output pipes, its health check, its next process's
// start).
const (
	Reserve   = 64
	PerWorker = 4
)

// MaxConns returns the client connections a balancer with workers
// workers, whose open-file limit is nofile, may hold at once: half of
// what the reserve leaves, since each may have a connection to a worker
// open too; at least 16. A limit of 0, not known, gives 1<<24.
func MaxConns(nofile uint64, workers int) int {
	const most = 1 << 24
	if nofile == 0 {
		return most
	}
	reserve := uint64(Reserve + PerWorker*max(workers, 0))
	if nofile < reserve+32 {
		return 16
	}
	return int(min((nofile-reserve)/2, most))
}

// OpenFiles returns the process's open-file limit now (on Linux, Go's
// runtime has raised it to the hard limit at start), or 0 if it cannot
// be read.
func OpenFiles() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return uint64(r.Cur) // int64 on the BSDs
}
