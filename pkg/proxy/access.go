package proxy

import (
	"log/slog"
	"net/http"
	"time"
)

// accessRecorder notes the status and size of an answer for the access
// log. It passes Flush through, so streams stay immediate.
type accessRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (a *accessRecorder) WriteHeader(code int) {
	// An interim answer (103 Early Hints, a worker's 100 Continue) is
	// not the request's status; 101 is, the final answer to an upgrade.
	if a.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *accessRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	n, err := a.ResponseWriter.Write(p)
	a.bytes += int64(n)
	return n, err
}

func (a *accessRecorder) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (a *accessRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// logAccess writes one access-log record.
func logAccess(log *slog.Logger, remote, method, uri string, status int, bytes int64, d time.Duration) {
	log.Info("access", "remote", remote, "method", method, "uri", uri, "status", status,
		"bytes", bytes, "duration_ms", float64(d.Microseconds())/1000)
}
