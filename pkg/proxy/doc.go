// Package proxy is the request path: it picks a worker from the pool,
// forwards the request to it, retries on another worker when the first
// could not have answered, counts the outcome, and maps failures to one
// HTTP status each.
//
// The engine is net/http/httputil.ReverseProxy with Rewrite and
// SetXForwarded, so X-Forwarded-* headers sent by clients are replaced,
// not trusted (and, in both engines, the same names spelt with
// underscores are dropped: CGI-style workers read them as the real ones). Its round trip to a worker is h1 for a request without a
// body or with a small one held in memory: HTTP/1.1 written and read on
// the handler's goroutine over a kept-alive connection, with net/http's
// Request.Write and ReadResponse, which spares http.Transport's two
// goroutines and channel handoffs per connection. Upgrades (WebSocket)
// and large or streamed bodies go through an http.Transport. Both keep up
// to 1024 idle connections per worker, so keep-alive connections are
// reused instead of piling up in TIME_WAIT. Every engine opens a new
// connection to a worker only once the worker accepted the ones before
// (its listener's accept queue, from the kernel, is empty), so that a
// worker that accepts only between pieces of work, as a busy Node
// process, never has a pile of connections, and the requests on them,
// waiting for it.
//
// A request whose worker fails before the response headers (refused,
// reset, EOF) is retried on another worker, at most Options.MaxRetries
// times, by one rule (retryable) that the engines share. A body of up to
// Options.RetryBufferBytes (1 MiB by default) is read into memory before
// a worker is picked, and sent anew to each attempt; a request with such
// a body, or none, is retried whatever its method. A larger body is
// streamed and can be sent only once: its request is retried only while
// no attempt has read from it, and then only when the connection was
// refused (the worker saw nothing) or the method is idempotent (GET,
// HEAD, OPTIONS, PUT, DELETE, TRACE). A timeout (504), a client that
// left (499) or a body the client broke (400) is never retried, and the
// last two are not the worker's failures. The caveats: a POST whose worker acted on
// it and then died before answering is done again by the next worker,
// since no request is to be lost; a body that fits is read whole before
// any worker sees it (the client gets its 100 Continue from the proxy);
// and the buffers cost up to RetryBufferBytes per request in flight.
//
// The package never starts or stops processes; the only thing it does to
// a worker besides counting is to mark it down at once when its port
// refuses a connection.
package proxy
