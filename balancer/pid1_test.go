package main

// The balancer as PID 1, as in a container: run in a pid namespace of its
// own, it must reap the orphans its -cmd workers leave behind and still
// stop on SIGTERM.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pid1Stat is what the test reads of a process in the host's /proc.
type pid1Stat struct {
	pid, ppid int
	state     byte
	comm      string
}

// pid1ReadStat parses /proc/PID/stat: "pid (comm) state ppid ...", where
// comm may hold spaces and parentheses.
func pid1ReadStat(pid int) (pid1Stat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pid1Stat{}, false
	}
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return pid1Stat{}, false
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 2 {
		return pid1Stat{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return pid1Stat{}, false
	}
	return pid1Stat{pid: pid, ppid: ppid, state: fields[0][0], comm: s[open+1 : end]}, true
}

// pid1Procs lists every process of the host's /proc.
func pid1Procs() []pid1Stat {
	entries, _ := os.ReadDir("/proc")
	var procs []pid1Stat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := pid1ReadStat(pid); ok {
			procs = append(procs, st)
		}
	}
	return procs
}

// pid1Zombies returns the zombie children of parent.
func pid1Zombies(parent int) []pid1Stat {
	var zs []pid1Stat
	for _, p := range pid1Procs() {
		if p.ppid == parent && p.state == 'Z' {
			zs = append(zs, p)
		}
	}
	return zs
}

// pid1InNamespace returns the pids of the processes whose pid namespace
// is ns (a /proc/PID/ns/pid link such as "pid:[4026532]").
func pid1InNamespace(ns string) []int {
	var pids []int
	for _, p := range pid1Procs() {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); err == nil && link == ns {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// TestPID1ReapsZombies runs the balancer as PID 1 of a new pid namespace,
// with workers that each leave an orphan behind, kills workers 100 times,
// and checks that no zombie is left and that SIGTERM still stops it all.
func TestPID1ReapsZombies(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100 worker restarts in a pid namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a pid namespace (unshare --pid --mount-proc)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare from util-linux: ", err)
	}
	nsArgs := []string{"--pid", "--fork", "--mount-proc", "--kill-child"}
	if out, err := exec.Command(unshare, append(nsArgs, "true")...).CombinedOutput(); err != nil {
		t.Skipf("unshare cannot make a pid namespace here: %v: %s", err, out)
	}
	began := time.Now()
	const budget = 50 * time.Second

	addr := freeAddr(t)
	c := newCluster(t, addr)
	// c.seen: pids inside the namespace, never killed from here
	// Each worker's subshell forks a sleep and exits: the sleep is
	// re-parented to PID 1, the balancer, which must reap it.
	worker := fmt.Sprintf("sh -c '(sleep 0.05 &); PATH=%s:$PATH exec backend'", binDir)
	c.cmd = exec.Command(unshare, append(nsArgs, filepath.Join(binDir, "balancer"),
		"-listen", addr, "-admin-listen", "", "-workers", "2",
		"-restart-backoff", "10ms", "-restart-backoff-max", "50ms", "-cmd", worker)...)
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	unsharePid := c.cmd.Process.Pid
	balancerPid := 0 // the balancer's pid on the host, the child of unshare
	t.Cleanup(func() {
		select {
		case <-c.exited:
			// unshare reaped the balancer: its pid may be someone else's now.
		default:
			// Killing PID 1 of the namespace kills everything in it.
			if balancerPid != 0 {
				if st, ok := pid1ReadStat(balancerPid); ok && st.ppid == unsharePid {
					syscall.Kill(balancerPid, syscall.SIGKILL)
				}
			}
			c.cmd.Process.Signal(syscall.SIGKILL)
			<-c.exited
		}
		c.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("balancer output:\n%s", c.logs.String())
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for balancerPid == 0 {
		for _, p := range pid1Procs() {
			if p.ppid == unsharePid {
				balancerPid = p.pid
			}
		}
		if balancerPid != 0 {
			break
		}
		select {
		case <-c.exited:
			t.Fatalf("unshare exited: %v", c.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no child of unshare within 10s")
		}
	}
	c.waitUp(2)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", balancerPid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if f[len(f)-1] != "1" {
				t.Fatalf("balancer pids %v; want 1 in its namespace", f)
			}
		}
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", balancerPid))
	if err != nil {
		t.Fatal(err)
	}

	// Each GET /dead ends the worker that answers it. Now and then the
	// exit is seen before the answer, and the proxy retries the GET on
	// the other worker, which dies too (a 502): count the deaths by the
	// restarts, not by the requests.
	const kills = 100
	var restarts int64
	not200 := 0
	for restarts < kills {
		if time.Since(began) > budget {
			t.Fatalf("only %d of %d worker deaths within %v", restarts, kills, budget)
		}
		code, _, err := c.get("/dead")
		if err != nil {
			t.Fatalf("after %d worker deaths: GET /dead: %v", restarts, err)
		}
		if code != 200 {
			not200++
		}
		before := restarts
		c.waitFor(fmt.Sprintf("restart %d", before+1), func(s statsDoc) bool {
			restarts = 0
			up := 0
			for _, w := range s.Workers {
				restarts += w.Restarts
				if w.State == "up" {
					up++
				}
			}
			return restarts > before && up == 2 && len(s.Workers) == 2
		})
	}
	if not200 > 0 {
		t.Logf("%d GET /dead of %d answered other than 200", not200, restarts)
	}

	// The last orphans sleep 50 ms; a zombie the reaper missed stays.
	var zombies []pid1Stat
	for settle := time.Now().Add(5 * time.Second); ; {
		zombies = pid1Zombies(balancerPid)
		if len(zombies) == 0 || time.Now().After(settle) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(zombies) > 0 {
		var some []string
		for _, z := range zombies[:min(len(zombies), 10)] {
			some = append(some, fmt.Sprintf("%d (%s)", z.pid, z.comm))
		}
		t.Fatalf("after %d worker deaths: got %d zombie children of PID 1 (host pid %d); want none: %s",
			restarts, len(zombies), balancerPid, strings.Join(some, ", "))
	}

	// A PID 1 gets only the signals it handles: SIGTERM must still stop it.
	if err := syscall.Kill(balancerPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("balancer did not exit within 30s of SIGTERM")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("got exit code %d (%v); want 0", code, c.cmd.ProcessState)
	}
	if left := pid1InNamespace(ns); len(left) > 0 {
		t.Errorf("got processes %v left in the namespace; want none", left)
	}
	t.Logf("%d worker deaths and restarts in %v", restarts, time.Since(began).Round(time.Millisecond))
}
