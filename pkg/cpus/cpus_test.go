package cpus

import (
	"os"
	"runtime"
	"testing"
	"testing/fstest"
)

// file is a shorthand for a MapFS entry with content s.
func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fsys    fstest.MapFS
		numCPU  int
		want    float64 // 0 when there is no limit
		source  string
		wantCnt int
	}{
		{
			name: "v2 no limit",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/app\n"),
				"sys/fs/cgroup/app/cpu.max": file("max 100000\n"),
			},
			numCPU: 8, wantCnt: 8,
		},
		{
			name: "v2 1.5 CPUs",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/app\n"),
				"sys/fs/cgroup/app/cpu.max": file("150000 100000\n"),
			},
			numCPU: 8, want: 1.5, source: "cgroup v2 cpu.max /sys/fs/cgroup/app", wantCnt: 2,
		},
		{
			name: "v2 limit on a parent directory",
			fsys: fstest.MapFS{
				"proc/self/cgroup":                        file("0::/kubepods/pod1/ctr\n"),
				"sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": file("max 100000\n"),
				"sys/fs/cgroup/kubepods/pod1/cpu.max":     file("300000 100000\n"),
				"sys/fs/cgroup/kubepods/cpu.max":          file("600000 100000\n"),
			},
			numCPU: 8, want: 3, source: "cgroup v2 cpu.max /sys/fs/cgroup/kubepods/pod1", wantCnt: 3,
		},
		{
			name: "v2 smallest of leaf and parent",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/a/b\n"),
				"sys/fs/cgroup/a/b/cpu.max": file("50000 100000\n"),
				"sys/fs/cgroup/a/cpu.max":   file("200000 100000\n"),
			},
			numCPU: 8, want: 0.5, source: "cgroup v2 cpu.max /sys/fs/cgroup/a/b", wantCnt: 1,
		},
		{
			name: "v2 max everywhere",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/a/b\n"),
				"sys/fs/cgroup/a/b/cpu.max": file("max 100000\n"),
				"sys/fs/cgroup/a/cpu.max":   file("max 100000\n"),
				"sys/fs/cgroup/cpu.max":     file("max 100000\n"),
			},
			numCPU: 4, wantCnt: 4,
		},
		{
			name: "v2 root cgroup (namespaced container)",
			fsys: fstest.MapFS{
				"proc/self/cgroup":      file("0::/\n"),
				"sys/fs/cgroup/cpu.max": file("200000 100000\n"),
			},
			numCPU: 16, want: 2, source: "cgroup v2 cpu.max /sys/fs/cgroup", wantCnt: 2,
		},
		{
			name: "v1 quota 50000/100000",
			fsys: fstest.MapFS{
				"proc/self/cgroup": file("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"),
				"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us":  file("50000\n"),
				"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 4, want: 0.5, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/docker/abc", wantCnt: 1,
		},
		{
			name: "v1 quota -1",
			fsys: fstest.MapFS{
				"proc/self/cgroup": file("4:cpu,cpuacct:/docker/abc\n"),
				"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us":  file("-1\n"),
				"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": file("100000\n"),
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":             file("-1\n"),
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us":            file("100000\n"),
			},
			numCPU: 4, wantCnt: 4,
		},
		{
			name: "v1 mount named cpu",
			fsys: fstest.MapFS{
				"proc/self/cgroup": file("4:cpu,cpuacct:/docker/abc\n"),
				"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us":  file("250000\n"),
				"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 8, want: 2.5, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpu/docker/abc", wantCnt: 3,
		},
		{
			name: "v1 mount named cpu,cpuacct for a separate cpu hierarchy",
			fsys: fstest.MapFS{
				"proc/self/cgroup": file("2:cpuacct:/x\n1:cpu:/x\n"),
				"sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us":  file("100000\n"),
				"sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 8, want: 1, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/x", wantCnt: 1,
		},
		{
			name: "v1 controllers listed as cpuacct,cpu",
			fsys: fstest.MapFS{
				"proc/self/cgroup": file("3:cpuacct,cpu:/x\n"),
				"sys/fs/cgroup/cpuacct,cpu/x/cpu.cfs_quota_us":  file("200000\n"),
				"sys/fs/cgroup/cpuacct,cpu/x/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 8, want: 2, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpuacct,cpu/x", wantCnt: 2,
		},
		{
			name: "v1 hidden path falls back to the mount root",
			fsys: fstest.MapFS{
				"proc/self/cgroup":                            file("4:cpu,cpuacct:/docker/abc\n"),
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":  file("150000\n"),
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 8, want: 1.5, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct", wantCnt: 2,
		},
		{
			name: "v1 wins over the v2 line in hybrid mode",
			fsys: fstest.MapFS{
				"proc/self/cgroup":                    file("0::/\n1:cpu:/\n"),
				"sys/fs/cgroup/cpu/cpu.cfs_quota_us":  file("300000\n"),
				"sys/fs/cgroup/cpu/cpu.cfs_period_us": file("100000\n"),
				"sys/fs/cgroup/cpu.max":               file("100000 100000\n"),
			},
			numCPU: 8, want: 3, source: "cgroup v1 cpu.cfs_quota_us /sys/fs/cgroup/cpu", wantCnt: 3,
		},
		{
			name: "v1 no cpu mount",
			fsys: fstest.MapFS{
				"proc/self/cgroup":                 file("4:cpu,cpuacct:/docker/abc\n"),
				"sys/fs/cgroup/memory/memory.stat": file(""),
			},
			numCPU: 2, wantCnt: 2,
		},
		{
			name: "malformed files",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/a/b\n"),
				"sys/fs/cgroup/a/b/cpu.max": file("lots 100000\n"),
				"sys/fs/cgroup/a/cpu.max":   file("150000\n"),
				"sys/fs/cgroup/cpu.max":     file("100000 0\n"),
			},
			numCPU: 4, wantCnt: 4,
		},
		{
			name: "malformed v1 files",
			fsys: fstest.MapFS{
				"proc/self/cgroup":                    file("1:cpu:/\n"),
				"sys/fs/cgroup/cpu/cpu.cfs_quota_us":  file("fifty\n"),
				"sys/fs/cgroup/cpu/cpu.cfs_period_us": file("100000\n"),
			},
			numCPU: 4, wantCnt: 4,
		},
		{
			name: "malformed /proc/self/cgroup",
			fsys: fstest.MapFS{
				"proc/self/cgroup":      file("garbage\n\n::\n"),
				"sys/fs/cgroup/cpu.max": file("100000 100000\n"),
			},
			numCPU: 4, wantCnt: 4,
		},
		{
			name:   "no /proc/self/cgroup",
			fsys:   fstest.MapFS{"sys/fs/cgroup/cpu.max": file("100000 100000\n")},
			numCPU: 4, wantCnt: 4,
		},
		{
			name: "path with .. stays under the mount",
			fsys: fstest.MapFS{
				"proc/self/cgroup":      file("0::/../../etc\n"),
				"sys/fs/cgroup/cpu.max": file("100000 100000\n"),
			},
			numCPU: 4, want: 1, source: "cgroup v2 cpu.max /sys/fs/cgroup", wantCnt: 1,
		},
		{
			name: "limit above the host cores",
			fsys: fstest.MapFS{
				"proc/self/cgroup":          file("0::/app\n"),
				"sys/fs/cgroup/app/cpu.max": file("1600000 100000\n"),
			},
			numCPU: 4, want: 16, source: "cgroup v2 cpu.max /sys/fs/cgroup/app", wantCnt: 4,
		},
		{
			name:   "no CPUs reported",
			fsys:   fstest.MapFS{},
			numCPU: 0, wantCnt: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, source, ok := Limit(tc.fsys)
			if ok != (tc.want != 0) || got != tc.want {
				t.Errorf("Limit: got %v, ok %v; want %v, ok %v", got, ok, tc.want, tc.want != 0)
			}
			if source != tc.source {
				t.Errorf("Limit: got source %q; want %q", source, tc.source)
			}
			if n := Count(tc.fsys, tc.numCPU); n != tc.wantCnt {
				t.Errorf("Count(%d): got %d; want %d", tc.numCPU, n, tc.wantCnt)
			}
		})
	}
}

// TestThisMachine runs on the real /proc and /sys, which may have no
// cgroup filesystem at all: it checks only the bounds, and logs what it
// found.
func TestThisMachine(t *testing.T) {
	fsys := os.DirFS("/")
	limit, source, ok := Limit(fsys)
	n := Count(fsys, runtime.NumCPU())
	t.Logf("limit %v (ok %v) from %q; NumCPU %d; GOMAXPROCS %d; Count %d",
		limit, ok, source, runtime.NumCPU(), runtime.GOMAXPROCS(0), n)
	if n < 1 || n > runtime.NumCPU() {
		t.Errorf("got Count %d; want 1 to NumCPU (%d)", n, runtime.NumCPU())
	}
}
