package proxy

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/clusterlb/clusterlb/internal/limits"
	"golang.org/x/sys/unix"
)

// The sock_diag request for the TCP listener that a connection to one
// address would reach (linux/inet_diag.h: struct nlmsghdr, then struct
// inet_diag_req_v2), and where the answer's struct inet_diag_msg keeps
// the socket's state, its accept queue and its limit (idiag_rqueue and
// idiag_wqueue, which the kernel fills with sk_ack_backlog and
// sk_max_ack_backlog for a listening socket).
const (
	diagReqLen    = unix.SizeofNlMsghdr + 56
	diagReqSport  = unix.SizeofNlMsghdr + 8  // the request's idiag_sport, big-endian
	diagReqSrc    = unix.SizeofNlMsghdr + 12 // idiag_src, 16 bytes
	diagReqCookie = unix.SizeofNlMsghdr + 48 // idiag_cookie, two u32
	diagMsgState  = unix.SizeofNlMsghdr + 1  // the answer's idiag_state
	diagMsgSport  = unix.SizeofNlMsghdr + 4  // the answer's idiag_sport
	diagRqueue    = unix.SizeofNlMsghdr + 56 // inet_diag_msg.idiag_rqueue
	diagWqueue    = unix.SizeofNlMsghdr + 60 // inet_diag_msg.idiag_wqueue
	tcpListen     = 10                       // TCP_LISTEN in the kernel's enum
)

// acceptQueue returns how many connections the TCP listener that a
// connection to ap reaches has completed and its process not accepted
// yet, as `ss -lt` shows in Recv-Q, and how many it can hold (its
// backlog, Send-Q). ap must be a local address. ok is false when the
// kernel did not say or nothing listens there; when it cannot say at all
// (no sock_diag here), diagBroken is set, and no dial is held back again.
//
// The look is the kernel's own lookup of the socket by address (as for
// an arriving connection, a dual-stack listener included), not a dump of
// the listeners, whose cost grows with the size of the kernel's listener
// table: a look comes every few milliseconds while a dial is held back.
func acceptQueue(ap netip.AddrPort) (n, limit int, ok bool) {
	fd, err := diagSocket()
	if err != nil {
		return 0, 0, false
	}
	n, limit, ok, err = diagListener(fd, ap)
	if err != nil {
		// Whatever the socket still holds must not answer a later look.
		unix.Close(fd)
		return 0, 0, false
	}
	putDiagSocket(fd)
	return n, limit, ok
}

// diagSockets keeps a few sock_diag sockets between looks; each holds no
// answer when put back.
var diagSockets = make(chan int, 4)

func diagSocket() (int, error) {
	select {
	case fd := <-diagSockets:
		return fd, nil
	default:
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		if !limits.Exhausted(err) {
			diagBroken.Store(true)
		}
		return -1, err
	}
	// The kernel answers at once; a look must never hold a dial longer.
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func putDiagSocket(fd int) {
	select {
	case diagSockets <- fd:
	default:
		unix.Close(fd)
	}
}

var (
	errDiag = errors.New("sock_diag: malformed answer")
	diagSeq atomic.Uint32
)

// diagListener asks the kernel for the socket a connection to ap would
// reach. A missing socket is not an error (ok false); an error leaves
// the socket fd unfit for another look.
func diagListener(fd int, ap netip.AddrPort) (n, limit int, ok bool, err error) {
	addr := ap.Addr().Unmap()
	var req [diagReqLen]byte
	ne := binary.NativeEndian
	seq := diagSeq.Add(1)
	ne.PutUint32(req[0:], diagReqLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST) // one socket, not a dump
	ne.PutUint32(req[8:], seq)
	h := unix.SizeofNlMsghdr
	req[h] = unix.AF_INET6
	if addr.Is4() {
		req[h] = unix.AF_INET
	}
	req[h+1] = unix.IPPROTO_TCP
	ne.PutUint32(req[h+4:], 1<<tcpListen)
	binary.BigEndian.PutUint16(req[diagReqSport:], ap.Port())
	if addr.Is4() {
		a := addr.As4()
		copy(req[diagReqSrc:], a[:])
	} else {
		a := addr.As16()
		copy(req[diagReqSrc:], a[:])
	}
	ne.PutUint32(req[diagReqCookie:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(req[diagReqCookie+4:], ^uint32(0))
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, false, err
	}
	var buf [1024]byte
	k, _, err := unix.Recvfrom(fd, buf[:], 0)
	if err != nil {
		return 0, 0, false, err
	}
	b := buf[:k]
	if len(b) < unix.SizeofNlMsghdr {
		return 0, 0, false, errDiag
	}
	l := int(ne.Uint32(b[0:]))
	if l < unix.SizeofNlMsghdr || l > len(b) || len(b)-l >= unix.NLMSG_ALIGNTO || ne.Uint32(b[8:]) != seq {
		return 0, 0, false, errDiag
	}
	switch ne.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		// ENOENT: nothing listens there. The error is the answer: the
		// socket holds nothing more.
		return 0, 0, false, nil
	case unix.SOCK_DIAG_BY_FAMILY:
		if l < diagWqueue+4 {
			return 0, 0, false, errDiag
		}
		if b[diagMsgState] != tcpListen || binary.BigEndian.Uint16(b[diagMsgSport:]) != ap.Port() {
			return 0, 0, false, nil // a connection, not a listener
		}
		return int(ne.Uint32(b[diagRqueue:])), int(ne.Uint32(b[diagWqueue:])), true, nil
	}
	return 0, 0, false, errDiag
}
