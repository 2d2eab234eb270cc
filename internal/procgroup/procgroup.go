// Package procgroup gives the attributes with which the balancer and the
// bench start the processes they supervise: each in a process group of
// its own, so that one signal to the group reaches what the process
// started too (a shell's child, npm's node), and, where the kernel can,
// killed when the thread that started it exits.
package procgroup

import "syscall"

// Attr returns the attributes for a child in a new process group. On
// Linux the child also gets SIGKILL when the thread that started it
// exits (Pdeathsig; golang/go#27505: the thread, not the process), so a
// caller that starts children from one locked thread living as long as
// itself has them die with it, even by SIGKILL. Other systems have no
// such setting: a child outlives a parent killed that way, and must
// watch its parent itself (the built-in backend does).
func Attr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(a)
	return a
}
