//go:build !linux

package proxy

import "net/netip"

// acceptQueue is known only on Linux: elsewhere dials are not held back.
func acceptQueue(netip.AddrPort) (n, limit int, ok bool) {
	diagBroken.Store(true)
	return 0, 0, false
}
