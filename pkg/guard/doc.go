// Package guard rejects HTTP/1.x requests whose body length is ambiguous, a request
// smuggling defence that net/http cannot give a handler on its own.
//
// A request carrying both Content-Length and Transfer-Encoding is accepted by net/http,
// which drops the Content-Length before any handler runs (fixLength in
// net/http/transfer.go). A balancer must not forward such a request, so the guard looks at
// the raw bytes instead: NewListener wraps the listener, each conn's Read feeds what it
// reads to a small framing state machine (head, Content-Length body, chunked body and
// trailer, next head) that follows the stream exactly as net/http's server reads it and
// queues one verdict per head. ConnContext puts the conn in each request's context, and
// Handler, the outermost handler, takes the request's verdict with Check and answers 400
// with "Connection: close" instead of calling the next handler.
//
// The package owns that framing and the verdict queue. It does not own routing,
// forwarding or error mapping for other failures; heads net/http rejects by itself
// (malformed lines, bad Content-Length, unsupported Transfer-Encoding, heads over
// MaxHeaderBytes) are left to net/http, which answers them and closes the conn.
//
// SendTimeout is the package's other defence, on the way out: under NewListener, it
// cuts off a client that stops reading (each write gets a deadline), which nothing in
// net/http or fasthttp does without a WriteTimeout that would also cut long answers.
//
// Caveats:
//   - The verdicts are paired with requests by order and by a fingerprint of the request
//     line, so Handler must be outermost and Check must run exactly once per request.
//   - It fails closed. Where it cannot follow the framing (obs-fold on Content-Length or
//     Transfer-Encoding, a non-CRLF trailer, a head over its limit) it stops inspecting the
//     conn, and any later HTTP/1 request on it fails Check with ErrUnverified.
//   - After an Upgrade or CONNECT request it keeps parsing: if the backend declines the
//     upgrade, net/http keeps serving the conn as HTTP/1 and the guard must stay in step.
//     Once the conn is hijacked no request is checked on it again; the tunnel's bytes
//     usually stop the parser at their first byte, and otherwise cost only parsing time.
//   - It sees plaintext HTTP/1 only. Under TLS (tls.NewListener around the guard) every
//     HTTP/1 request fails with ErrUnverified; HTTP/2 requests are not checked.
//   - Its rules are those of Go 1.26's net/http and must be revisited when net/http
//     changes how it frames requests.
package guard
