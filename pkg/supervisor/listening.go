package supervisor

import (
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// listenHintAfter is how long a new process may refuse the balancer's
// connections before its listeners are looked at: time enough for most
// programs to open theirs.
const listenHintAfter = 2 * time.Second

// listenLookEvery spaces hintListen's looks: each reads every process's
// stat file, to find the worker's children.
const listenLookEvery = time.Second

// hintListen is told each failed check of pr while it starts. Once pr
// has refused connections for listenHintAfter, it looks at what pr
// listens on, every listenLookEvery until it listens on something, and
// logs it once if none of it takes the balancer's connections: the
// usual cause is a program that listens on a port of its own choosing
// (an app.listen(3000)) instead of $PORT, which otherwise shows only as
// a start_timeout 30 s later, its clients waiting meanwhile.
func (s *Supervisor) hintListen(id int, pr *proc, err error) {
	now := time.Now()
	if pr.p == nil || !errors.Is(err, syscall.ECONNREFUSED) || pr.hinted ||
		now.Sub(pr.h.Started()) < listenHintAfter || now.Sub(pr.lookedAt) < listenLookEvery {
		return
	}
	pr.lookedAt = now // only pr's monitor calls hintListen, so no lock
	target, perr := netip.ParseAddrPort(pr.h.Addr())
	if perr != nil {
		return
	}
	ls := listeners(pr.h.Pid())
	if len(ls) == 0 {
		return // nothing yet: a program still loading
	}
	pr.hinted = true
	if slices.ContainsFunc(ls, func(l netip.AddrPort) bool { return reaches(l, target) }) {
		return
	}
	s.log.Warn("worker listens, but not on its PORT: the program must listen on the port in $PORT, on 127.0.0.1 or on every address",
		"worker", id, "pid", pr.h.Pid(), "PORT", target.Port(), "listening", ls)
}

// reaches reports whether a listener on l takes connections made to
// target: the same port, on target's address or on every address.
func reaches(l, target netip.AddrPort) bool {
	a := l.Addr().Unmap()
	return l.Port() == target.Port() && (a == target.Addr() || a.IsUnspecified())
}
