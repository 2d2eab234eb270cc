package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
)

// ErrNoWorker means no worker was up to take the request.
var ErrNoWorker = errors.New("no worker available")

// StatusClientClosed is the status logged for a request whose client went
// away before the answer (nginx's 499). Nothing is sent.
const StatusClientClosed = 499

// Status maps a failed forward to the status the client gets, and the
// message of its JSON body. It is the one place where errors become
// statuses: 503 when no worker is up, 504 when the worker timed out, 499
// when the client went away, 502 otherwise.
func Status(r *http.Request, err error) (int, string) {
	switch {
	case errors.Is(err, ErrNoWorker):
		return http.StatusServiceUnavailable, "no worker available"
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		return StatusClientClosed, "client closed request"
	case isTimeout(err):
		return http.StatusGatewayTimeout, "worker timed out"
	default:
		return http.StatusBadGateway, "worker failed"
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isRefused reports whether err happened while connecting, so the worker
// never saw the request.
func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent reports whether a request with this method may be sent twice.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// retryable reports whether an attempt that failed with err, and so got
// no response byte, may be sent to another worker: always when the
// connection was refused, since nothing was sent; otherwise when the
// method is idempotent or the request has a body, and none of that body
// was read by the attempt. A POST without a body that was sent may have
// done its work, and is not sent twice.
func retryable(r *http.Request, err error, hasBody, bodyRead bool) bool {
	if r.Context().Err() != nil || isTimeout(err) {
		// The client left, or the worker was slow: another worker would
		// only do the same work again.
		return false
	}
	if isRefused(err) {
		return true
	}
	return (idempotent(r.Method) || hasBody) && !bodyRead
}
