package supervisor

import (
	"context"
	"net/netip"
	"slices"
	"time"

	psnet "github.com/shirou/gopsutil/v4/net"
)

// listeners returns the TCP addresses that the process pid and every
// process under it listen on, read from /proc; none when it cannot be
// read.
func listeners(pid int) []netip.AddrPort {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []netip.AddrPort
	for _, p := range tree(pid, children()) {
		conns, err := psnet.ConnectionsPidWithoutUidsWithContext(ctx, "tcp", int32(p))
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		for _, c := range conns {
			ip, err := netip.ParseAddr(c.Laddr.IP)
			if c.Status != "LISTEN" || err != nil {
				continue
			}
			if ap := netip.AddrPortFrom(ip, uint16(c.Laddr.Port)); !slices.Contains(out, ap) {
				out = append(out, ap)
			}
		}
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}
