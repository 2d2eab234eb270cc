// Package cpus finds the CPU limit of the cgroup the process runs in, so
// that the default number of workers follows a container's CPU limit
// rather than the host's core count. (Node's os.cpus().length gets this
// wrong: a container limited to 2 CPUs on a 64-core host forks 64 workers
// that fight over 2 CPUs' worth of time.)
//
// Limit reads /proc/self/cgroup and then the cgroup's own files: cpu.max
// for cgroup v2, cpu.cfs_quota_us and cpu.cfs_period_us for cgroup v1. A
// limit set on any ancestor of the process's cgroup applies too, as the
// kernel enforces it, so the smallest one along the path wins. Count turns
// the limit into a process count: the CPUs, capped by the limit rounded
// up, and at least 1.
//
// Everything is read through an fs.FS rooted at "/" (os.DirFS("/") in
// production, fstest.MapFS in tests). The package reads files only; it
// holds no state and does not look at /proc/self/mountinfo, so it assumes
// the usual mount points (/sys/fs/cgroup for v2, /sys/fs/cgroup/cpu or
// /sys/fs/cgroup/cpu,cpuacct for v1). A cgroup it cannot find or parse
// counts as no limit: the answer is then the CPU count, never an error.
package cpus
