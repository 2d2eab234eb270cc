package proxy

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"strings"
)

// writeHead writes req, a request without a body, to bw as net/http's
// Request.Write does, but for the order of the header's fields: they go
// in the map's order, where Request.Write sorts them (RFC 9110, section
// 5.3: the order of fields with different names carries no meaning; that
// of one field's values is kept). Request.Write formats each line with
// fmt, builds a transfer writer and sorts the keys through a pool: about
// a twentieth of the httputil engine's CPU per proxied GET before this
// (docs/bench/tuning.md).
//
// It reports false, having written nothing, for a request outside the
// common case, which the caller then gives to Request.Write: a body, a
// Close, a Transfer-Encoding or trailers, CONNECT, a host that
// Request.Write would change (non-ASCII, an IPv6 zone) or blank, a
// request URI with a control byte (Request.Write's error), a method that
// is no token, or a client trace that wants to hear of the writes.
func writeHead(bw *bufio.Writer, req *http.Request) bool {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validName(method) {
		// Request.Write writes any method as it is; a method that is
		// no token (which net/http's HTTP/1 server refuses before it
		// gets here) is left to it, so that this path never formats one.
		return false
	}
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 ||
		req.Close || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 ||
		req.Method == "CONNECT" || req.URL == nil {
		return false
	}
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil &&
		(trace.WroteHeaderField != nil || trace.WroteHeaders != nil || trace.WroteRequest != nil) {
		return false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !plainHost(host) {
		return false
	}
	ruri := req.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if ruri[i] < ' ' || ruri[i] == 0x7f {
			return false
		}
	}

	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")

	// The User-Agent: Go's own unless the header has one, which may be
	// blank so that none is sent.
	ua := "Go-http-client/1.1"
	if vv, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = vv[0]
		}
	}
	if ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	// Request.Write sends a length for these methods even with no body:
	// many servers expect one.
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		bw.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			// Written above, from the request's fields, or not at
			// all (Request.Write's reqWriteExcludeHeader: the keys
			// as they are, not canonicalized).
			continue
		}
		if !validName(k) {
			continue // as Request.Write drops a name that is no token
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	return true // (a write error comes back from bw's Flush)
}

// writeField writes the line "k: v", v as Request.Write sends a value:
// its CR and LF bytes made spaces, and trimmed of ASCII space.
func writeField(bw *bufio.Writer, k, v string) {
	for len(v) > 0 && asciiSpace(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && asciiSpace(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n") {
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c == '\r' || c == '\n' {
				c = ' '
			}
			bw.WriteByte(c)
		}
	} else {
		bw.WriteString(v)
	}
	bw.WriteString("\r\n")
}

func asciiSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// plainHost reports whether Request.Write sends host as it is: not
// blank, ASCII, every byte one that net/http lets into a Host field, and
// no IPv6 zone (a '%'), which it would take out.
func plainHost(host string) bool {
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!$&'()*+,-.:;=[]_~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
