package guard

import (
	"bytes"
	"math"
)

// Limits copied from net/http, so the framer gives up no later than the server does.
const (
	// bufioSlack is net/http's read-ahead on top of MaxHeaderBytes: the server lets a head
	// run to MaxHeaderBytes+4096 bytes read off the wire (Server.initialReadLimitSize), and
	// its 4096-byte bufio.Reader may already hold bytes read while serving the previous request.
	bufioSlack = 2 * 4096
	// maxChunkLine mirrors maxLineLength in net/http/internal/chunked.go: a chunk-size line,
	// CRLF included, must fit the server's 4096-byte bufio.Reader.
	maxChunkLine = 4096
	// maxTrailer mirrors seeUpcomingDoubleCRLF in net/http/transfer.go: the trailer section,
	// final CRLF included, must fit the same 4096-byte buffer.
	maxTrailer = 4096
	// maxExcess mirrors the chunk-overhead budget in net/http/internal/chunked.go.
	maxExcess = 16 * 1024
	// maxPending bounds heads parsed but not yet checked. net/http reads at most one bufio
	// buffer past the request it is serving, so a real client cannot queue more than a few
	// hundred; a hijacked tunnel that happens to carry HTTP/1 text can queue without end.
	maxPending = 1024
	// maxKeptLine is the largest partial-line buffer kept for reuse between heads.
	maxKeptLine = 64 << 10
)

// state is where the framer is in the inbound byte stream.
type state uint8

const (
	stStart     state = iota // before a head; may skip CR/LF left behind by a POST
	stHead                   // inside a head, line by line
	stBody                   // skipping a Content-Length body
	stChunkLine              // inside a chunk-size line
	stChunkData              // skipping chunk data
	stChunkCR                // expecting the CR that ends chunk data
	stChunkLF                // expecting the LF that ends chunk data
	stTrailer                // inside the trailer section, line by line
	stLost                   // gave up for good; see framer.feed
)

// field is the kind of the last header field seen, for obs-fold continuation lines.
type field uint8

const (
	fieldNone field = iota
	fieldOther
	fieldCL
	fieldTE
)

// chunk-size line phases, as net/http's readChunkLine, trimTrailingWhitespace,
// removeChunkExtension and parseHexUint see the line.
const (
	phaseDigits uint8 = iota
	phaseOWS
	phaseExt
)

// verdict is what the framer learnt about one request head.
type verdict struct {
	fp  uint64 // fingerprint of "method SP request-target", to pair the head with its *http.Request
	err error  // nil if the head is fine
}

// framer follows HTTP/1.x request framing over a conn's inbound bytes, the way net/http's
// server reads them, and queues one verdict per head. It must not be copied after first use.
//
// The rules are those of Go 1.26's net/http. Where the server rejects a head it closes the
// conn, so the framer may be lenient there; inside bodies it is at least as strict as the
// server, and anything it does not follow puts it in stLost for good. Check fails closed on
// a lost framer, so a mistake here costs a 400, never a missed smuggling attempt.
type framer struct {
	limit  int  // largest head in bytes
	crlf   bool // a head must end in CRLF CRLF (CRLFHeadEnd)
	badEnd bool // crlf is on and a head ended otherwise; the framer is lost
	st     state
	line   []byte // partial head or trailer line carried from one read to the next
	n      int    // bytes of the current head or trailer so far
	skip   int    // leading CR/LF bytes that may still be skipped before the next head

	// The current head.
	methodDone     bool // the method's bytes have been checked up to its SP
	sawRequestLine bool
	lastCR         bool // the previous line of the head ended in CRLF, not a bare LF
	fp             uint64
	http11         bool
	post           bool
	last           field
	clCount        int
	cl             uint64
	teCount        int
	teChunked      bool

	// Body framing.
	remain  uint64 // bytes left of a Content-Length body or of chunk data
	phase   uint8
	digits  int
	size    uint64
	lineLen int
	cr      bool
	excess  int64

	q  []verdict // verdicts not yet taken; q[qi:] is the queue
	qi int
}

func newFramer(limit int) framer {
	return framer{limit: limit}
}

// lost reports whether the framer has given up on the conn.
func (f *framer) lost() bool { return f.st == stLost }

// pending reports how many verdicts wait in the queue.
func (f *framer) pending() int { return len(f.q) - f.qi }

// pop takes the oldest verdict; ok is false if there is none.
func (f *framer) pop() (v verdict, ok bool) {
	if f.qi == len(f.q) {
		return verdict{}, false
	}
	v = f.q[f.qi]
	f.qi++
	if f.qi == len(f.q) {
		f.q, f.qi = f.q[:0], 0
	}
	return v, true
}

// lose gives up on the conn: nothing more is parsed or queued.
func (f *framer) lose() {
	f.st = stLost
	f.line = nil
}

// feed advances the framer over b, the next bytes read from the conn.
func (f *framer) feed(b []byte) {
	for len(b) > 0 {
		switch f.st {
		case stLost:
			return
		case stStart:
			// RFC 7230 section 3 tolerance for old buggy clients, as net/http's
			// conn.readRequest does it: up to 4 CR/LF bytes, and only after a POST.
			for f.skip > 0 && len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
				b = b[1:]
				f.skip--
			}
			if len(b) > 0 {
				f.beginHead()
			}
		case stHead, stTrailer:
			b = f.lines(b)
		case stBody:
			b = f.skipBody(b)
			if f.remain == 0 {
				f.endMessage()
			}
		case stChunkLine:
			b = f.chunkLine(b)
		case stChunkData:
			b = f.skipBody(b)
			if f.remain == 0 {
				f.st = stChunkCR
			}
		case stChunkCR, stChunkLF:
			// net/http reads exactly "\r\n" after chunk data (chunkedReader.Read).
			want := byte('\r')
			if f.st == stChunkLF {
				want = '\n'
			}
			if b[0] != want {
				f.lose()
				return
			}
			b = b[1:]
			if f.st == stChunkCR {
				f.st = stChunkLF
			} else {
				f.beginChunkLine()
			}
		}
	}
}

func (f *framer) skipBody(b []byte) []byte {
	k := uint64(len(b))
	if k > f.remain {
		k = f.remain
	}
	f.remain -= k
	return b[k:]
}

func (f *framer) beginHead() {
	f.st = stHead
	f.n = 0
	f.skip = 0
	f.methodDone = false
	f.sawRequestLine = false
	f.last = fieldNone
	f.clCount, f.cl = 0, 0
	f.teCount, f.teChunked = 0, false
}

// endMessage is reached after a request's body, or after its head when it has none.
func (f *framer) endMessage() {
	f.st = stStart
	f.skip = 0
	if f.post {
		f.skip = 4
	}
}

// lines feeds complete lines of b to the head or trailer parser and keeps a partial last
// line for the next read. Lines are not copied unless they straddle two reads.
func (f *framer) lines(b []byte) []byte {
	for len(b) > 0 && (f.st == stHead || f.st == stTrailer) {
		if f.st == stHead && !f.methodDone && !f.methodBytes(b) {
			return nil
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if f.grow(len(b)) {
				f.line = append(f.line, b...)
			}
			return nil
		}
		if !f.grow(i + 1) {
			return nil
		}
		line := b[:i+1]
		if len(f.line) > 0 {
			f.line = append(f.line, line...)
			line = f.line
		}
		b = b[i+1:]
		if f.st == stHead {
			f.headLine(line)
		} else {
			f.trailerLine(line)
		}
		if f.st == stLost {
			return nil
		}
		if cap(f.line) > maxKeptLine {
			f.line = nil
		}
		f.line = f.line[:0]
	}
	return b
}

// methodBytes checks the method's bytes in b, the start or the continuation of a head, as
// they arrive: a method is a token. Without this a tunnel's first bytes after a hijack
// (TLS, WebSocket frames) would be buffered as a head up to the limit; with it, they stop
// the framer at once.
func (f *framer) methodBytes(b []byte) bool {
	for _, c := range b {
		if c == ' ' {
			f.methodDone = true
			return true
		}
		if !validFieldNameByte(c) {
			f.lose()
			return false
		}
	}
	return true
}

// grow counts k more bytes of the current head or trailer and reports whether they fit.
func (f *framer) grow(k int) bool {
	limit := f.limit
	if f.st == stTrailer {
		limit = maxTrailer
	}
	f.n += k
	if f.n > limit {
		f.lose()
		return false
	}
	return true
}

// headLine parses one head line, LF included. Like textproto's ReadLine it drops the LF
// and one CR before it: net/http accepts bare LF line endings in heads.
func (f *framer) headLine(line []byte) {
	line = line[:len(line)-1]
	cr := len(line) > 0 && line[len(line)-1] == '\r'
	if cr {
		line = line[:len(line)-1]
	}
	lastCR := f.lastCR
	f.lastCR = cr
	if !f.sawRequestLine {
		f.requestLine(line)
		return
	}
	if len(line) == 0 {
		// fasthttp takes a CRLF right after the request line as an empty
		// header block, however that line ended; after a field it wants
		// the field's CRLF and this one.
		if f.crlf && !(cr && (lastCR || f.last == fieldNone)) {
			f.badEnd = true
			f.lose()
			return
		}
		f.endHead()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		// obs-fold continues the previous field's value. net/http rejects it on the first
		// field; on Content-Length or Transfer-Encoding the framer would have to refold the
		// value to judge it, which no sane client needs, so it gives up (and Check fails closed).
		if f.last == fieldNone || f.last == fieldCL || f.last == fieldTE {
			f.lose()
		}
		return
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		f.lose() // net/http: "malformed MIME header: missing colon"
		return
	}
	key, val := line[:colon], trimOWS(line[colon+1:])
	switch {
	case equalFoldASCII(key, "content-length"):
		f.last = fieldCL
		n, ok := parseContentLength(val)
		if !ok || (f.clCount > 0 && n != f.cl) {
			// net/http answers 400 and closes: bad value, or differing repeats (Issue 16490).
			f.lose()
			return
		}
		f.clCount++
		f.cl = n
	case equalFoldASCII(key, "transfer-encoding"):
		if bytes.ContainsFunc(val, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			// net/http answers 400 to a control byte in any field
			// value; here it would read as an unknown coding (501)
			// to a server that takes the head (fasthttp).
			f.lose()
			return
		}
		f.last = fieldTE
		f.teCount++
		f.teChunked = equalFoldASCII(val, "chunked")
	default:
		f.last = fieldOther
	}
}

// requestLine parses "method SP request-target SP HTTP-version" as net/http's
// parseRequestLine and ParseHTTPVersion do.
func (f *framer) requestLine(line []byte) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		f.lose()
		return
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		f.lose()
		return
	}
	sp2 += sp1 + 1
	major, minor, ok := parseVersion(line[sp2+1:])
	if !ok || major != 1 {
		// HTTP/2 prior knowledge ("PRI * HTTP/2.0") or a version net/http answers with 505.
		f.lose()
		return
	}
	f.sawRequestLine = true
	f.fp = fingerprint(fnvOffset, line[:sp2])
	f.http11 = minor >= 1
	f.post = string(line[:sp1]) == "POST"
}

// endHead queues the head's verdict and picks its body framing as net/http's readTransfer does.
func (f *framer) endHead() {
	v := verdict{fp: f.fp}
	// net/http ignores Transfer-Encoding before HTTP/1.1 (Issue 12785) and otherwise
	// accepts exactly one field, "chunked"; anything else gets a 501 and a closed conn,
	// before it looks at Content-Length.
	chunked := f.http11 && f.teCount > 0
	switch {
	case chunked && (f.teCount != 1 || !f.teChunked):
		v.err = ErrTransferCoding
	case f.clCount > 0 && f.teCount > 0:
		v.err = ErrAmbiguousLength
	case !f.http11 && f.teCount > 0:
		v.err = ErrTransferEncodingHTTP10
	case f.clCount > 1:
		v.err = ErrRepeatedLength // its one value frames the body: the framer follows on
	}
	if f.pending() >= maxPending {
		f.lose()
		return
	}
	if v.err == ErrTransferCoding {
		// Its body cannot be followed: the verdict, then nothing more.
		f.q = append(f.q, v)
		f.lose()
		return
	}
	f.q = append(f.q, v)
	switch {
	case chunked:
		f.excess = 0
		f.beginChunkLine()
	case f.cl > 0:
		f.st = stBody
		f.remain = f.cl
	default:
		f.endMessage()
	}
}

func (f *framer) beginChunkLine() {
	f.st = stChunkLine
	f.phase = phaseDigits
	f.digits = 0
	f.size = 0
	f.lineLen = 0
	f.cr = false
}

// chunkLine parses a chunk-size line byte by byte with the rules of net/http's
// chunkedReader: CRLF only (no bare LF, no other CR), at most 16 hex digits, trailing
// SP/HT allowed only without an extension, anything after ';' ignored.
func (f *framer) chunkLine(b []byte) []byte {
	for i, c := range b {
		if f.cr {
			if c != '\n' {
				f.lose()
				return nil
			}
			f.endChunkLine()
			return b[i+1:]
		}
		switch c {
		case '\r':
			f.cr = true
			continue
		case '\n':
			f.lose() // RFC 9112 errata 7633: no bare LF in chunked lines
			return nil
		}
		f.lineLen++
		if f.lineLen+2 > maxChunkLine {
			f.lose()
			return nil
		}
		switch f.phase {
		case phaseDigits:
			if d, ok := unhex(c); ok {
				f.digits++
				if f.digits > 16 {
					f.lose()
					return nil
				}
				f.size = f.size<<4 | uint64(d)
				continue
			}
			switch c {
			case ';':
				if f.digits == 0 {
					f.lose()
					return nil
				}
				f.phase = phaseExt
			case ' ', '\t':
				f.phase = phaseOWS
			default:
				f.lose()
				return nil
			}
		case phaseOWS:
			if c != ' ' && c != '\t' {
				f.lose()
				return nil
			}
		}
	}
	return nil
}

func (f *framer) endChunkLine() {
	if f.digits == 0 {
		f.lose()
		return
	}
	// Same arithmetic as chunkedReader.beginChunk, wrap-around included, so the
	// framer gives up exactly where the server does.
	f.excess += int64(f.lineLen) + 2
	f.excess -= 16 + (2 * int64(f.size))
	f.excess = max(f.excess, 0)
	if f.size == 0 {
		// The last chunk: beginChunk's io.EOF overrides the excess error.
		f.st = stTrailer
		f.n = 0
		return
	}
	if f.excess > maxExcess {
		f.lose()
		return
	}
	f.st = stChunkData
	f.remain = f.size
}

// trailerLine parses one trailer line, LF included. It is stricter than net/http's
// textproto reader (CRLF only, no obs-fold, no space in names) so that whatever it accepts,
// the server accepts too and ends the trailer at the same byte.
func (f *framer) trailerLine(line []byte) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		f.lose()
		return
	}
	line = line[:len(line)-2]
	if len(line) == 0 {
		f.endMessage()
		return
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		f.lose()
		return
	}
	for _, c := range line[:colon] {
		if !validFieldNameByte(c) {
			f.lose()
			return
		}
	}
	for _, c := range line[colon+1:] {
		if !validFieldValueByte(c) {
			f.lose()
			return
		}
	}
}

// parseVersion is net/http's ParseHTTPVersion on bytes.
func parseVersion(b []byte) (major, minor int, ok bool) {
	if len(b) != len("HTTP/X.Y") || string(b[:5]) != "HTTP/" || b[6] != '.' ||
		!isDigit(b[5]) || !isDigit(b[7]) {
		return 0, 0, false
	}
	return int(b[5] - '0'), int(b[7] - '0'), true
}

// parseContentLength is net/http's parseContentLength on a trimmed value:
// decimal digits only, at most 1<<63-1.
func parseContentLength(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// trimOWS drops leading and trailing SP and HT, as textproto does to field values.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFoldASCII reports whether b equals lower, a lower-case ASCII string, ignoring
// ASCII case only: header names are tokens, and Unicode folding would let "ſ" match "s".
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// validFieldNameByte reports whether c is a token character (RFC 9110 section 5.6.2).
func validFieldNameByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validFieldValueByte is textproto's validHeaderValueByte: anything but CTLs other than HT.
func validFieldValueByte(c byte) bool {
	return c == '\t' || (c >= 0x20 && c != 0x7f)
}

// FNV-1a, 64 bits: cheap and allocation-free on both []byte and string.
const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

func fingerprint[T ~string | ~[]byte](h uint64, s T) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}
