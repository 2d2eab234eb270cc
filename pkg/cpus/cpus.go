package cpus

import (
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
)

// cgroupRoot is where the cgroup filesystems are mounted, relative to the
// root of the fs.FS.
const cgroupRoot = "sys/fs/cgroup"

// Limit returns the CPU bandwidth limit of the cgroup the process runs in,
// in CPUs (quota over period: 1.5 means one and a half CPUs' worth of time
// per period), and source, which names the file it came from, for a log
// line: "cgroup v2 cpu.max /sys/fs/cgroup/x". fsys is rooted at "/".
//
// ok is false when there is no limit: no /proc/self/cgroup, no cpu
// controller, "max" or -1 all the way up, or files it cannot parse (a
// malformed file is treated as no limit rather than as an error, because
// the caller's only fallback is the CPU count anyway).
func Limit(fsys fs.FS) (cpus float64, source string, ok bool) {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0, "", false
	}
	// Each line is "hierarchy-ID:controller-list:cgroup-path". A v1
	// hierarchy whose controllers include "cpu" owns the CPU controller;
	// otherwise the v2 hierarchy ("0::/path") does. A controller cannot be
	// in both at once (man 7 cgroups); Go's runtime applies the same rule.
	var v2Path string
	var v2 bool
	for line := range strings.Lines(string(data)) {
		id, rest, ok1 := strings.Cut(strings.TrimSpace(line), ":")
		controllers, cgPath, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue
		}
		if id == "0" && controllers == "" {
			v2, v2Path = true, cgPath
			continue
		}
		for c := range strings.SplitSeq(controllers, ",") {
			if c == "cpu" {
				return limitV1(fsys, controllers, cgPath)
			}
		}
	}
	if v2 {
		return walk(cgroupRoot, cgPathRel(v2Path), "cgroup v2 cpu.max", func(dir string) (float64, bool) {
			return readV2(fsys, dir)
		})
	}
	return 0, "", false
}

// Count returns how many processes fit the CPUs: numCPU, capped by the
// cgroup limit rounded up when there is one, and at least 1. numCPU is
// usually runtime.NumCPU(), which already follows the CPU affinity mask.
func Count(fsys fs.FS, numCPU int) int {
	n := max(numCPU, 1)
	if limit, _, ok := Limit(fsys); ok && limit < float64(n) {
		n = int(math.Ceil(limit))
	}
	return max(n, 1)
}

// limitV1 reads the v1 CFS quota. The hierarchy is mounted under the name
// of its controller list, "cpu,cpuacct" on most distributions, with "cpu"
// often a symlink to it; some systems have only one of the two, so every
// name is tried, in that order.
func limitV1(fsys fs.FS, controllers, cgPath string) (float64, string, bool) {
	for _, mount := range []string{controllers, "cpu,cpuacct", "cpu"} {
		dir := path.Join(cgroupRoot, mount)
		if fi, err := fs.Stat(fsys, dir); err != nil || !fi.IsDir() {
			continue
		}
		// Walking up also covers a container whose cgroup namespace
		// hides the path: /proc/self/cgroup names the host's path
		// (/docker/abc), which does not exist under the mount, whose root
		// is the container's own cgroup.
		return walk(dir, cgPathRel(cgPath), "cgroup v1 cpu.cfs_quota_us", func(dir string) (float64, bool) {
			return readV1(fsys, dir)
		})
	}
	return 0, "", false
}

// walk reads the limit of mount/rel and of every parent directory up to
// mount itself, and returns the smallest, as the kernel enforces every
// ancestor's limit as well as the cgroup's own.
func walk(mount, rel, what string, read func(dir string) (float64, bool)) (float64, string, bool) {
	var best float64
	var source string
	found := false
	for {
		dir := path.Join(mount, rel)
		if limit, ok := read(dir); ok && (!found || limit < best) {
			best, source, found = limit, what+" /"+dir, true
		}
		if rel == "." {
			return best, source, found
		}
		rel = path.Dir(rel)
	}
}

// cgPathRel turns a cgroup path from /proc/self/cgroup ("/a/b") into a
// path relative to the mount ("a/b", or "." for the root) that fs.FS
// accepts: Clean drops any ".." that would climb above the mount.
func cgPathRel(p string) string {
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// readV2 parses dir/cpu.max: "max 100000" (no limit) or "150000 100000"
// (quota and period in microseconds: 1.5 CPUs).
func readV2(fsys fs.FS, dir string) (float64, bool) {
	data, err := fs.ReadFile(fsys, path.Join(dir, "cpu.max"))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	return ratio(f[0], f[1])
}

// readV1 parses dir/cpu.cfs_quota_us (-1 for no limit) and
// dir/cpu.cfs_period_us, both in microseconds.
func readV1(fsys fs.FS, dir string) (float64, bool) {
	quota, err := fs.ReadFile(fsys, path.Join(dir, "cpu.cfs_quota_us"))
	if err != nil {
		return 0, false
	}
	period, err := fs.ReadFile(fsys, path.Join(dir, "cpu.cfs_period_us"))
	if err != nil {
		return 0, false
	}
	return ratio(strings.TrimSpace(string(quota)), strings.TrimSpace(string(period)))
}

// ratio returns quota/period when both are positive integers; -1 (v1's
// "no limit") and anything malformed give false.
func ratio(quota, period string) (float64, bool) {
	q, err := strconv.ParseInt(quota, 10, 64)
	if err != nil || q <= 0 {
		return 0, false
	}
	p, err := strconv.ParseInt(period, 10, 64)
	if err != nil || p <= 0 {
		return 0, false
	}
	return float64(q) / float64(p), true
}
