//go:build !darwin

package supervisor

import "strconv"

// children maps each process's pid to its children's, from one pass
// over /proc (eachProc): the parent of each process is in its stat file
// (the kernel's list of a task's children, /proc/PID/task/TID/children,
// is not built into every kernel). It is nil when /proc cannot be read.
func children() map[int][]int {
	kids := make(map[int][]int)
	readable := eachProc(func(pid int, f []string) bool {
		if len(f) >= 2 { // f: state ppid ...
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid > 0 {
				kids[ppid] = append(kids[ppid], pid)
			}
		}
		return true
	})
	if !readable {
		return nil
	}
	return kids
}
