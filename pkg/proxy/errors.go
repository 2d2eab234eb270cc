package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"

	"github.com/clusterlb/clusterlb/internal/limits"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// ErrNoWorker means no worker was up to take the request.
var ErrNoWorker = errors.New("no worker available")

// errClientBody marks a request whose body could not be read from the
// client: a malformed chunk, a body cut short. The client's fault, not the
// worker's: 400.
var errClientBody = errors.New("bad request body")

// badRequest is the error of a request the balancer will not send to a
// worker as it came: the client's fault, 400 with the error's text.
type badRequest string

func (e badRequest) Error() string { return string(e) }

const (
	// errBadUpgrade marks a request that asks to switch to a protocol
	// whose name is not printable ASCII, which the ReverseProxy refuses
	// to send.
	errBadUpgrade badRequest = "invalid Upgrade header"
	// errBadMethod, errBadTarget and errBadHost mark an HTTP/2 request
	// whose method, target or host would not make a valid HTTP/1.1
	// request line or Host field (see checkH2Head). errBadTarget and
	// errBadHost are also the texts of the 400s for what net/http's
	// HTTP/1 server takes and the engines refuse alike (Proxy.serve):
	// the asterisk-form with a method other than OPTIONS, a fragment,
	// an empty Host.
	errBadMethod badRequest = "invalid method"
	errBadTarget badRequest = "invalid request target"
	errBadHost   badRequest = "invalid Host header"
)

// errConnect marks a CONNECT: the balancer carries no tunnel, and a
// worker's 2xx would turn the client's connection into one. As nginx
// answers it: 405.
var errConnect = errors.New("CONNECT is not supported")

// StatusClientClosed is the status logged for a request whose client went
// away before the answer (nginx's 499). Nothing is sent.
const StatusClientClosed = 499

// Status maps a failed forward to the status the client gets, and the
// message of its JSON body. It is the one place where errors become
// statuses: 503 when no worker is up or the balancer could not open a
// connection to one (out of descriptors: limits.Exhausted), 504 when the
// worker timed out, 499 when the client went away, 400 when its body
// could not be read or its head cannot be sent on as it came (a
// badRequest; 408 when it stalled, 413 when over the fasthttp engine's
// limit), 405 to a CONNECT, 502 otherwise.
func Status(r *http.Request, err error) (int, string) {
	return statusOf(err, r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded))
}

// statusOf is Status for any engine: clientGone tells whether the client
// went away.
func statusOf(err error, clientGone bool) (int, string) {
	var bad badRequest
	switch {
	case errors.Is(err, ErrNoWorker):
		return http.StatusServiceUnavailable, "no worker available"
	case errors.Is(err, errClientBody) && isTimeout(err):
		// Before the client's leaving: net/http's server takes a read
		// that timed out for the client gone, and cancels the request.
		return http.StatusRequestTimeout, "request body timed out"
	case clientGone || errors.Is(err, context.Canceled):
		return StatusClientClosed, "client closed request"
	case errors.Is(err, errClientBody):
		return http.StatusBadRequest, "bad request body"
	case errors.As(err, &bad):
		return http.StatusBadRequest, string(bad)
	case errors.Is(err, errConnect):
		return http.StatusMethodNotAllowed, errConnect.Error()
	case limits.Exhausted(err):
		return http.StatusServiceUnavailable, "balancer out of descriptors, memory or ports"
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "request body too large"
	case isTimeout(err):
		return http.StatusGatewayTimeout, "worker timed out"
	default:
		return http.StatusBadGateway, "worker failed"
	}
}

// isTimeout reports whether err is a timeout: net's, the context's, or
// fasthttp's ErrTimeout, which has a Timeout method but is no net.Error.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// isRefused reports whether err happened while connecting (refused, or
// timed out), so the worker never saw the request.
func isRefused(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, syscall.ECONNREFUSED)
}

// workerUnreachable reports whether a failed connect says the worker is
// gone or cut off (refused, or timed out), which marks it down at once;
// not a failure on the balancer's own side (EMFILE, EADDRNOTAVAIL: out
// of descriptors or ports), which would mark every worker down in turn
// and cut their requests in flight. Either way the request, never sent,
// may go to another worker (retryable).
func workerUnreachable(err error) bool {
	return isRefused(err) && (errors.Is(err, syscall.ECONNREFUSED) || isTimeout(err))
}

// workerDown wraps err, the I/O failure of an attempt that was cut short
// because its worker was marked down, so that it reads as
// pool.ErrWorkerDown.
func workerDown(err error) error {
	switch {
	case errors.Is(err, errDownBeforeDial):
		return err // says it already, and that nothing was sent
	case errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, errStaleConn):
		// Never sent, which the retry rule must see (notSent); neither
		// wraps a context's end or a timeout that statusOf would read
		// instead.
		return fmt.Errorf("%w (%w)", pool.ErrWorkerDown, err)
	}
	// The rest only as text: the cut's own I/O errors (a closed
	// connection, a cancelled context) are not the client's leaving.
	return fmt.Errorf("%w (%v)", pool.ErrWorkerDown, err)
}

// idempotent reports whether a request with this method may be sent twice.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// resendable reports whether a request may be sent again after an
// attempt that may have reached its worker: its method is idempotent, or
// its client says it is with a non-empty Idempotency-Key header (or the
// older X-Idempotency-Key; net/http's Transport takes the header's
// presence alone, but fasthttp's headers cannot tell an empty one from
// none, and both engines follow one rule). RFC 9110 9.2.2: a
// non-idempotent request is not retried without some means to know that
// it is safe, for the worker may have acted on it before it died. The
// headers are looked at only for a method that is not idempotent.
func resendable(req *http.Request) bool {
	return idempotent(req.Method) || req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// errStaleConn means a kept-alive connection was found closed by its
// worker before the request was written to it: nothing was sent.
var errStaleConn = errors.New("kept-alive connection closed by the worker before the request was written")

// notSent reports whether a failed attempt never reached its worker: the
// connection was refused, or found closed before anything was written,
// or the worker was marked down before a connection to it was opened.
func notSent(err error) bool {
	return isRefused(err) || errors.Is(err, errStaleConn) || errors.Is(err, errDownBeforeDial)
}

// retryable is the retry rule, the one both engines follow. An attempt
// failed with err before any byte of the response came back; it reports
// whether the request may be sent to another worker. The inputs are the
// engine's own: whether the request may be sent twice (resendable);
// err, which wraps context.Canceled when the client went away; whether
// the body can be sent again whole (there is none, or it was buffered);
// and, for a body that cannot, whether any attempt has read from it yet.
//
// Never when the client went away, or its body could not be read: no
// other worker would do better. Never when the body is partly gone (a
// streamed body an attempt has read from). Always when the worker never
// got the request: the connection was refused, or timed out (a host cut
// off, a worker whose accept queue is full), or was found closed before
// the request went out. Never when the worker timed out on a request it
// got: another worker would only do the same work again. Otherwise the
// worker is taken to have died (reset, EOF), and the request goes to
// another worker if it may be sent twice: a POST that a worker may have
// acted on before it died gets a 502, never a second run.
func retryable(resendable bool, err error, replayable, bodyRead bool) bool {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, errClientBody) || errors.Is(err, errBadAnswer):
		return false
	case !replayable && bodyRead:
		return false
	case notSent(err):
		return true
	case isTimeout(err):
		return false
	}
	return resendable
}

// errBadAnswer is a worker's answer that cannot be passed on: a status
// outside 100..599 (which RFC 9110 15 has a client take as a 5xx), a 101
// to a protocol the client did not ask for, a header field name that is
// no token, a header block past maxWorkerHeader. The worker did answer,
// and may have acted on the request, so it is never retried: the client
// gets a 502, counted once as the worker's failure. (nginx answers 502
// to "upstream sent invalid header" too.)
var errBadAnswer = errors.New("worker answered wrongly")

// badStatus returns errBadAnswer for a status outside 100..599.
func badStatus(code int) error {
	if code < 100 || code > 599 {
		return fmt.Errorf("%w: status %d", errBadAnswer, code)
	}
	return nil
}

// maxWorkerHeader bounds a worker's response header block, in both
// engines: the fasthttp engine's client reads it into a buffer of this
// size, and the httputil engine stops reading there. A worker that sends
// more gets its request a 502 instead of growing the balancer's memory
// without end.
const maxWorkerHeader = 16 << 10

// errHeaderTooLarge is a worker's response header past maxWorkerHeader.
var errHeaderTooLarge = fmt.Errorf("%w: response header over %d bytes", errBadAnswer, maxWorkerHeader)

// validName reports whether a header field name is a token (RFC 9110
// 5.1): no space, no separator, no control byte. "Transfer Encoding"
// passed on might be read as framing by a lenient peer.
func validName[T string | []byte](name T) bool {
	if len(name) == 0 {
		return false
	}
	for i := range len(name) {
		if !tokenByte[name[i]] {
			return false
		}
	}
	return true
}

// badAuthority reports whether a request target in absolute form (RFC
// 9112 3.2.2, "http://host/path") has userinfo, or a host that badHost
// refuses (an empty one among them): RFC 9110 4.2.1 has a recipient
// reject an http URI whose host is empty, and 4.2.4 treat userinfo in
// one as an error. net/http's server dropped the userinfo and took the
// Host field for an empty host; fasthttp's made the userinfo an
// Authorization header the client never sent, and an empty host a
// request with no Host at all. Other forms of target are not its
// business.
func badAuthority[T string | []byte](uri T) bool {
	if len(uri) == 0 || uri[0] == '/' || uri[0] == '*' {
		return false // origin or asterisk form: the usual case
	}
	start := -1
	for i := 0; i+2 < len(uri); i++ {
		if uri[i] == ':' && uri[i+1] == '/' && uri[i+2] == '/' {
			start = i + 3
			break
		}
	}
	if start < 0 {
		return false
	}
	end := start
	for end < len(uri) && uri[end] != '/' && uri[end] != '?' {
		if uri[end] == '@' {
			return true
		}
		end++
	}
	return end == start || badHost(uri[start:end])
}

// badHost reports whether host, a Host field or a target's authority,
// is one that RFC 9112 3.2 has a server answer 400 to, as fasthttp's
// server answers most of them and net/http's takes them: an empty name
// before a port (":80"), a port that is not a number ("x:abc",
// "x:80:80"), or a bracket that does not enclose an IPv6 literal ("[::1",
// "a]b", "[zz]:80"). An empty host is left to the callers, for HTTP/1.0
// may send none.
func badHost[T string | []byte](host T) bool {
	if len(host) == 0 {
		return false
	}
	port := -1 // where the port starts, after its ':'
	if host[0] == '[' {
		end := -1
		for i := len(host) - 1; i > 0; i-- {
			if host[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return true
		}
		if a, err := netip.ParseAddr(string(host[1:end])); err != nil || !a.Is6() {
			return true // a rare form: the conversion's cost does not matter
		}
		switch {
		case end+1 == len(host):
		case host[end+1] != ':':
			return true
		default:
			port = end + 2
		}
	} else {
		for i := range len(host) {
			switch host[i] {
			case '[', ']':
				return true
			case ':':
				if i == 0 {
					return true // no name before the port
				}
				if port < 0 {
					port = i + 1
				}
			}
		}
	}
	if port < 0 {
		return false
	}
	for i := port; i < len(host); i++ {
		if host[i] < '0' || host[i] > '9' {
			return true // a second ':' too
		}
	}
	return false
}

// forwardedAlias reports whether header name is one of the X-Forwarded-*
// fields the proxy sets, written with an underscore for a dash: CGI, WSGI
// and Rack servers read both spellings as HTTP_X_FORWARDED_FOR, so a
// client could pass its own value past the proxy's to such a worker.
// nginx drops every name with an underscore; only these are dropped here.
func forwardedAlias[T string | []byte](name T) bool {
	if len(name) < len("X-Forwarded-For") || len(name) > len("X-Forwarded-Proto") {
		return false
	}
	under := false
	for i := range len(name) {
		if name[i] == '_' {
			under = true
			break
		}
	}
	if !under {
		return false
	}
	var b [len("X-Forwarded-Proto")]byte
	for i := range len(name) {
		b[i] = name[i]
		if b[i] == '_' {
			b[i] = '-'
		}
	}
	n := string(b[:len(name)])
	return asciiEqualFold(n, "X-Forwarded-For") || asciiEqualFold(n, "X-Forwarded-Host") || asciiEqualFold(n, "X-Forwarded-Proto")
}

// tokenByte is true for the bytes of RFC 9110's tchar.
var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// badAnswer returns errBadAnswer for the httputil engine's answer resp to
// out that cannot be passed on: a status outside 100..599, a 101 to no
// upgrade out asked for (a bare one included, which the ReverseProxy
// would take for a switch to "" as asked and tunnel), a header name that
// is no token. Both of the engine's round trips (h1 and the
// http.Transport) check with it, so that they agree.
func badAnswer(out *http.Request, resp *http.Response) error {
	if err := badStatus(resp.StatusCode); err != nil {
		return err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Compared as the ReverseProxy compares them, in ASCII: under
		// Unicode folding a Kelvin sign is a k, and a name it refuses
		// would pass here. (What is asked is printable: Proxy.serve.)
		if asked, got := upgradeType(out.Header), upgradeType(resp.Header); asked == "" || !asciiEqualFold(asked, got) {
			return fmt.Errorf("%w: switched to %q when %q was asked", errBadAnswer, got, asked)
		}
	}
	return badNames(resp.Header)
}

// asciiEqualFold reports whether a and b are equal, ignoring the case of
// ASCII letters only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// printable reports whether s is printable ASCII only.
func printable(s string) bool {
	for i := range len(s) {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// badNames returns errBadAnswer when a name of h is no token.
func badNames(h http.Header) error {
	for k := range h {
		if err := badName(k); err != nil {
			return err
		}
	}
	return nil
}

// badName returns errBadAnswer when a worker's header name is no token.
func badName[T string | []byte](name T) error {
	if !validName(name) {
		return fmt.Errorf("%w: header name %q", errBadAnswer, name)
	}
	return nil
}
