// Package proxy is the request path: it picks a worker from the pool,
// forwards the request to it, retries on another worker when the first
// could not have answered, counts the outcome, and maps failures to one
// HTTP status each.
//
// The engine is net/http/httputil.ReverseProxy with Rewrite and
// SetXForwarded, so X-Forwarded-* headers sent by clients are replaced,
// not trusted. Its Transport is tuned for loopback workers: a large idle
// pool per worker, so keep-alive connections are reused instead of piling
// up in TIME_WAIT.
//
// A request is retried on the next worker when its attempt failed before
// any response byte and replaying it is safe: the connection was refused
// (nothing was sent), or the method is idempotent and the request body
// was not read. The package never starts or stops processes; the only
// thing it does to a worker besides counting is to mark it down at once
// when its port refuses a connection.
package proxy
