package main

// The container image's promise, checked without a container engine: the
// balancer built with CGO_ENABLED=0 (as the Dockerfile builds it) is a
// static binary, with no dynamic loader and no libc to find in
// distroless/static, and it runs, workers included, as a non-root user.

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the uid and gid the test runs the balancer as when it runs as
// root, as the image runs it as distroless's nonroot (65532).
const nobody = 65534

func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a static binary: skipped with -short")
	}

	// t.TempDir is 0700 under a 0700 parent; the unprivileged user
	// needs to reach and execute the binary, so build into a fresh
	// 0755 directory instead.
	dir, err := os.MkdirTemp("", "balancer-static")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "balancer")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}

	checkStatic(t, bin)

	uid := os.Getuid()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		uid = nobody
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		for d := dir; ; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
				t.Skipf("%s is not searchable by others (%v), so uid %d cannot run the binary; set TMPDIR", d, err, nobody)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}

	addr := freeAddr(t)
	c := newCluster(t, addr)
	c.cmd = exec.Command(bin, "-listen", addr, "-admin-listen", "", "-workers", "1")
	c.cmd.Dir = dir
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.cleanup)

	s := c.waitUp(1)
	if got := processUID(t, c.cmd.Process.Pid); got != uid {
		t.Errorf("balancer runs as uid %d; want %d", got, uid)
	}
	pids := workerPids(s)
	t.Logf("balancer pid %d and workers %v, want uid %d", c.cmd.Process.Pid, pids, uid)
	for _, pid := range pids {
		if got := processUID(t, pid); got != uid {
			t.Errorf("worker pid %d runs as uid %d; want %d", pid, got, uid)
		}
	}
	if status, body, err := c.get("/operacion-simple"); err != nil || status != 200 {
		t.Errorf("GET /operacion-simple: got %d %q %v; want 200", status, body, err)
	}

	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("got exit code %d; want 0", code)
	}
	waitGone(t, pids, time.Second) // the balancer waited for them already
}

// checkStatic fails the test if the ELF file at path asks for a dynamic
// loader (PT_INTERP) or for shared libraries (DT_NEEDED): either would be
// missing from distroless/static, and the binary would not start there.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a PT_INTERP program header; want a static binary", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: DT_NEEDED: %v", path, err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q; want none", path, libs)
	}
}

// processUID returns the real uid of pid, from the Uid line of
// /proc/PID/status ("Uid:\treal\teffective\tsaved\tfs"), and fails the
// test if the four differ: a process that kept a privileged saved uid
// could become root again.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		ids, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		f := strings.Fields(ids)
		if len(f) != 4 || f[0] != f[1] || f[0] != f[2] || f[0] != f[3] {
			t.Errorf("pid %d: got %q; want four equal uids", pid, strings.TrimSpace(line))
		}
		var uid int
		if _, err := fmt.Sscan(f[0], &uid); err != nil {
			t.Fatalf("pid %d: %q: %v", pid, line, err)
		}
		return uid
	}
	t.Fatalf("pid %d: no Uid line in /proc/%d/status", pid, pid)
	return -1
}
