package supervisor

import "golang.org/x/sys/unix"

// children maps each process's pid to its children's, from the kernel's
// process table (one sysctl, as ps reads it): macOS has no /proc. It is
// nil when the table cannot be read.
func children() map[int][]int {
	procs, err := unix.SysctlKinfoProcSlice("kern.proc.all")
	if err != nil {
		return nil
	}
	kids := make(map[int][]int)
	for i := range procs {
		if pid, ppid := int(procs[i].Proc.P_pid), int(procs[i].Eproc.Ppid); ppid > 0 {
			kids[ppid] = append(kids[ppid], pid)
		}
	}
	return kids
}
