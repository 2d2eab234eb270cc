package guard

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// fuzzLimit is the framer's head limit in the fuzz test: the default the server uses.
const fuzzLimit = http.DefaultMaxHeaderBytes + bufioSlack

type outcome struct {
	verdicts []verdict
	st       state
}

// frame feeds data to a fresh framer in the pieces cut by cuts (each byte is one piece's
// length less one; what is left goes in a last piece) and takes every verdict.
func frame(data, cuts []byte) outcome {
	f := newFramer(fuzzLimit)
	for _, c := range cuts {
		n := min(int(c)+1, len(data))
		f.feed(data[:n])
		data = data[n:]
	}
	f.feed(data)
	var vs []verdict
	for {
		v, ok := f.pop()
		if !ok {
			return outcome{verdicts: vs, st: f.st}
		}
		vs = append(vs, v)
	}
}

// served is one request as net/http's own reader framed it.
type served struct {
	fp      uint64
	faulty  error // the verdict the guard owes it, from its raw head; nil if none
	bodyErr error // reading the body failed
}

// requestFP is the fingerprint the framer gives the head of "method SP target ...".
func requestFP(method, target string) uint64 {
	return fingerprint(fingerprint(fingerprint(fnvOffset, method), " "), target)
}

// serveFraming frames data the way net/http's server does (ReadRequest over a 4096-byte
// bufio.Reader, with the server's CR/LF tolerance after a POST) until it fails. clean
// reports that data ended right after a whole request.
func serveFraming(data []byte) (out []served, clean bool) {
	r := bytes.NewReader(data)
	br := bufio.NewReaderSize(r, 4096)
	at := func() int { return len(data) - r.Len() - br.Buffered() }
	post := false
	for {
		if post {
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			_, _ = br.Discard(n)
		}
		start := at()
		if start == len(data) {
			return out, true
		}
		req, err := http.ReadRequest(br)
		if err != nil && (strings.HasPrefix(err.Error(), "unsupported transfer encoding") ||
			strings.HasPrefix(err.Error(), "too many transfer encodings")) {
			// The server answers 501 and closes; the guard owes it a verdict all the
			// same, for a server that reads more codings than net/http.
			line, _, _ := bytes.Cut(data[start:], []byte("\n"))
			method, rest, _ := bytes.Cut(line, []byte(" "))
			target, _, _ := bytes.Cut(rest, []byte(" "))
			return append(out, served{fp: requestFP(string(method), string(target)), faulty: ErrTransferCoding, bodyErr: err}), false
		}
		if err != nil || req.ProtoMajor != 1 {
			return out, false
		}
		// net/http drops Content-Length and Transfer-Encoding from req.Header; read the raw head again.
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(data[start:at()])))
		_, _ = tp.ReadLine()
		raw, _ := tp.ReadMIMEHeader()
		s := served{fp: requestFP(req.Method, req.RequestURI)}
		if te := len(raw["Transfer-Encoding"]) > 0; te && len(raw["Content-Length"]) > 0 {
			s.faulty = ErrAmbiguousLength
		} else if te && req.ProtoMinor == 0 {
			s.faulty = ErrTransferEncodingHTTP10
		} else if len(raw["Content-Length"]) > 1 {
			s.faulty = ErrRepeatedLength
		}
		_, s.bodyErr = io.Copy(io.Discard, req.Body)
		out = append(out, s)
		if s.bodyErr != nil {
			return out, false
		}
		post = req.Method == "POST"
	}
}

// fragments are the pieces compose builds plausible HTTP/1 streams from, so the fuzzer
// reaches deep framing states that random bytes rarely do.
var fragments = []string{
	"GET / HTTP/1.1\r\n", "POST /p HTTP/1.1\r\n", "POST /q HTTP/1.0\r\n", "GET /x HTTP/1.1\n",
	"OPTIONS * HTTP/1.1\r\n", "CONNECT h:1 HTTP/1.1\r\n", "PRI * HTTP/2.0\r\n", "PUT /u HTTP/1.9\r\n",
	"Host: x\r\n", "X: y\r\n", "Upgrade: websocket\r\n", "Connection: close\r\n",
	"Connection: keep-alive\r\n", "Trailer: T\r\n",
	"Content-Length: 3\r\n", "Content-Length: 0\r\n", "content-length: 5\n", "Content-Length : 3\r\n",
	"Content-Length: 03\r\n", "Content-Length:\r\n",
	"Transfer-Encoding: chunked\r\n", "transfer-encoding: CHUNKED\n", "Transfer-Encoding: gzip\r\n",
	"Transfer-Encoding: chunked, chunked\r\n", "Transfer-Encoding:chunked \r\n",
	" folded\r\n", "\tfolded\n",
	"\r\n", "\r\n", "\r\n", "\n", "\r", " ", "\t", ";", ":", ";ext=1", "\"q\"",
	"0", "1", "5", "a", "F", "00000000000000001",
	"hello", "abc", "x",
	"0\r\n", "0\r\n\r\n", "3\r\nabc\r\n", "5 \r\n", "5 ;x\r\n", "5;x\r\nhello\r\n", "1\nx\r\n",
	"T: z\r\n", "T z\r\n",
}

// compose turns each byte of data into a fragment.
func compose(data []byte) []byte {
	var b []byte
	for _, c := range data {
		b = append(b, fragments[int(c)%len(fragments)]...)
	}
	return b
}

// truncated reports whether a body error from net/http means the input ended early rather
// than that it was malformed. A trailer without CRLFCRLF in its first 4096 bytes counts
// as either.
func truncated(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "suspiciously long trailer")
}

func FuzzFraming(f *testing.F) {
	seeds := []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
		"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
		"POST /a HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc\r\n\r\nGET /b HTTP/1.0\n\n",
		"GET /a HTTP/1.1\nX: y\n z\n\nOPTIONS * HTTP/1.1\r\n\r\n",
		"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n1;x\r\n!\r\n0\r\n\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), []byte{3, 0, 17})
	}
	// Composed seeds: a chunked POST then a GET; the same POST with a Content-Length too.
	f.Add([]byte{1, 8, 20, 27, 49, 48, 0, 8, 27}, []byte{0})
	f.Add([]byte{1, 8, 14, 20, 27, 48, 0, 8, 27}, []byte{5})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		checkFraming(t, "raw", data, cuts)
		checkFraming(t, "composed", compose(data), cuts)
	})
}

// checkFraming checks that how data is cut into reads does not change the verdicts, and
// that the framer agrees with net/http on every request net/http frames.
func checkFraming(t *testing.T, kind string, data, cuts []byte) {
	t.Helper()
	whole := frame(data, nil)
	for _, c := range [][]byte{cuts, bytes.Repeat([]byte{0}, len(data))} {
		split := frame(data, c)
		if split.st != whole.st || !slices.Equal(split.verdicts, whole.verdicts) {
			t.Fatalf("%s %q cut %v: got %v in state %d; want %v in state %d",
				kind, data, c, split.verdicts, split.st, whole.verdicts, whole.st)
		}
	}

	// Against net/http: every request it frames, the framer frames alike, or has given up
	// before it (Check then fails closed); and it never gets past a body net/http rejects.
	ours := whole.verdicts
	reqs, clean := serveFraming(data)
	if clean && len(ours) == len(reqs) && whole.st != stStart && whole.st != stLost {
		t.Fatalf("%s %q: net/http ended between requests; got state %d; want stStart", kind, data, whole.st)
	}
	for i, s := range reqs {
		if i >= len(ours) {
			if whole.st != stLost {
				t.Fatalf("%s %q request %d: got no verdict in state %d; want a verdict or stLost", kind, data, i, whole.st)
			}
			return
		}
		if ours[i].fp != s.fp {
			t.Fatalf("%s %q request %d: got fingerprint %x; want %x", kind, data, i, ours[i].fp, s.fp)
		}
		if !errors.Is(ours[i].err, s.faulty) {
			t.Fatalf("%s %q request %d: got verdict %v; want %v", kind, data, i, ours[i].err, s.faulty)
		}
		if s.bodyErr != nil && !truncated(s.bodyErr) && whole.st != stLost {
			t.Fatalf("%s %q request %d: net/http rejected its body (%v); got state %d; want stLost",
				kind, data, i, s.bodyErr, whole.st)
		}
	}
}
