package proxy

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// The sock_diag request for TCP listeners on one port (linux/inet_diag.h:
// struct nlmsghdr, then struct inet_diag_req_v2), and where the answer's
// struct inet_diag_msg keeps the listener's accept queue and its limit
// (idiag_rqueue and idiag_wqueue, which the kernel fills with
// sk_ack_backlog and sk_max_ack_backlog for a listening socket).
const (
	diagReqLen   = unix.SizeofNlMsghdr + 56
	diagSportOff = unix.SizeofNlMsghdr + 8  // the request's idiag_sport, big-endian
	diagMsgSport = unix.SizeofNlMsghdr + 4  // the answer's
	diagRqueue   = unix.SizeofNlMsghdr + 56 // inet_diag_msg.idiag_rqueue
	diagWqueue   = unix.SizeofNlMsghdr + 60 // inet_diag_msg.idiag_wqueue
	tcpListen    = 10                       // TCP_LISTEN in the kernel's enum
)

// acceptQueue returns how many connections to the TCP listeners on port
// (IPv4 and IPv6, any address) the kernel has completed and no process
// has accepted yet, as `ss -lt` shows in Recv-Q, and how many they can
// hold (their backlog, Send-Q). ok is false when the kernel did not say
// or nothing listens on the port; when it cannot say at all (no
// sock_diag here), diagBroken is set, and no dial is held back again.
func acceptQueue(port int) (n, limit int, ok bool) {
	// A socket per look: they come only before a dial.
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		if !errors.Is(err, unix.EMFILE) && !errors.Is(err, unix.ENFILE) && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.ENOMEM) {
			diagBroken.Store(true)
		}
		return 0, 0, false
	}
	defer unix.Close(fd)
	// The kernel answers at once; a look must never hold a dial longer.
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, 0, false
	}
	for _, family := range [2]uint8{unix.AF_INET, unix.AF_INET6} {
		m, l, found, err := diagListeners(fd, family, port)
		if err != nil {
			return 0, 0, false
		}
		if found {
			n, limit, ok = n+m, limit+l, true
		}
	}
	return n, limit, ok
}

var errDiag = errors.New("sock_diag: malformed answer")

// diagListeners asks for the listeners of one family on port and sums
// their accept queues and their limits.
func diagListeners(fd int, family uint8, port int) (n, limit int, found bool, err error) {
	var req [diagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], diagReqLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	h := unix.SizeofNlMsghdr
	req[h] = family
	req[h+1] = unix.IPPROTO_TCP
	ne.PutUint32(req[h+4:], 1<<tcpListen)
	binary.BigEndian.PutUint16(req[diagSportOff:], uint16(port))
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, false, err
	}
	var buf [8192]byte
	for {
		k, _, err := unix.Recvfrom(fd, buf[:], 0)
		if err != nil {
			return 0, 0, false, err
		}
		b := buf[:k]
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(ne.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return 0, 0, false, errDiag
			}
			switch ne.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return n, limit, found, nil
			case unix.NLMSG_ERROR:
				return 0, 0, false, errDiag
			case unix.SOCK_DIAG_BY_FAMILY:
				if l < diagWqueue+4 {
					return 0, 0, false, errDiag
				}
				// The kernel filters on the port itself; checked
				// again in case an older one does not.
				if int(binary.BigEndian.Uint16(b[diagMsgSport:])) == port {
					n += int(ne.Uint32(b[diagRqueue:]))
					limit += int(ne.Uint32(b[diagWqueue:]))
					found = true
				}
			}
			b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
		}
	}
}
