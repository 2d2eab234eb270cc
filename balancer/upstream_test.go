package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// backendProc runs the standalone backend on addr's port with the given
// WORKER_ID, through runner (nil: directly; else e.g. "ip netns exec NS").
func backendProc(t *testing.T, runner []string, listenIP string, port, id int) *exec.Cmd {
	t.Helper()
	argv := append(append([]string{}, runner...), filepath.Join(binDir, "backend"))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), fmt.Sprintf("WORKER_ID=%d", id), "HOST="+listenIP)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	return cmd
}

func portOf(addr string) int {
	var p int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &p)
	return p
}

func TestProbes(t *testing.T) {
	c := start(t, 2, "-workers", "2", "-admin-listen", "")
	for _, tt := range []struct {
		path   string
		status int
	}{{"/livez", 200}, {"/readyz", 200}} {
		if status, body, err := c.get(tt.path); err != nil || status != tt.status {
			t.Errorf("GET %s: got %d %s %v; want %d", tt.path, status, body, err, tt.status)
		}
	}
	// Every worker crashing: not ready, still alive, and the probes were
	// never proxied.
	d := start(t, 0, "-workers", "2", "-admin-listen", "", "-cmd", "exit 3")
	time.Sleep(300 * time.Millisecond)
	if status, _, _ := d.get("/readyz"); status != 503 {
		t.Errorf("readyz with every worker down: got %d; want 503", status)
	}
	if status, _, _ := d.get("/livez"); status != 200 {
		t.Errorf("livez with every worker down: got %d; want 200", status)
	}
}

func TestRemoteUpstreams(t *testing.T) {
	skipShort(t)
	a, b := freeAddr(t), freeAddr(t)
	pa := backendProc(t, nil, "", portOf(a), 101)
	backendProc(t, nil, "", portOf(b), 102)
	c := start(t, 2, "-local-workers=false", "-upstream", a, "-upstream", b, "-admin-listen", "")
	s, _ := c.stats()
	for _, w := range s.Workers {
		if w.Pid != 0 {
			t.Errorf("remote worker %d shows pid %d; want 0", w.ID, w.Pid)
		}
	}
	resp, _ := c.client.Get(c.url + "/stats")
	var raw struct {
		Workers []map[string]any `json:"workers"`
	}
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	for _, w := range raw.Workers {
		if w["remote"] != true {
			t.Errorf("worker %v: want remote true", w)
		}
	}
	l := startLoad(t, c.url+"/operacion-simple", 16, 0)
	time.Sleep(300 * time.Millisecond)
	pa.Process.Signal(syscall.SIGKILL) // one upstream dies under load
	c.waitFor("the dead upstream marked down", func(s statsDoc) bool { return s.Workers[0].State == "down" })
	time.Sleep(300 * time.Millisecond)
	l.check(t)
}

// TestRemoteUpstreamsAcrossNamespaces runs two backends in network
// namespaces of their own, linked to this one by veth pairs, and cuts one
// link under load: no request may fail.
func TestRemoteUpstreamsAcrossNamespaces(t *testing.T) {
	skipShort(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	tag := fmt.Sprintf("%d", os.Getpid()%10000)
	// Whatever happens to the links, traffic for the test range never
	// leaves this machine: without a route of its own (a link is down)
	// it hits this unreachable route, not the default one.
	if out, err := exec.Command("ip", "route", "add", "unreachable", "10.199.0.0/16").CombinedOutput(); err != nil {
		t.Skipf("cannot add the guard route here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "route", "del", "unreachable", "10.199.0.0/16").Run() })
	var addrs []string
	for i := 1; i <= 2; i++ {
		ns := fmt.Sprintf("clb%s-%d", tag, i)
		host, peer := fmt.Sprintf("clbh%s%d", tag, i), fmt.Sprintf("clbp%s%d", tag, i)
		// Test hosts of our own, in namespaces this test makes: a /30
		// per link in the 10.199.0.0/16 range, used nowhere else.
		hostIP, peerIP := fmt.Sprintf("10.199.%d.1", i), fmt.Sprintf("10.199.%d.2", i)
		steps := [][]string{
			{"netns", "add", ns},
			{"link", "add", host, "type", "veth", "peer", "name", peer},
			{"link", "set", peer, "netns", ns},
			{"addr", "add", hostIP + "/30", "dev", host},
			{"link", "set", host, "up"},
			{"netns", "exec", ns, "ip", "addr", "add", peerIP + "/30", "dev", peer},
			{"netns", "exec", ns, "ip", "link", "set", peer, "up"},
			{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		}
		t.Cleanup(func() {
			exec.Command("ip", "link", "del", host).Run()
			exec.Command("ip", "netns", "del", ns).Run()
		})
		for _, st := range steps {
			if out, err := exec.Command("ip", st...).CombinedOutput(); err != nil {
				t.Skipf("cannot set up network namespaces here (ip %s: %v: %s)", strings.Join(st, " "), err, out)
			}
		}
		backendProc(t, []string{"ip", "netns", "exec", ns}, peerIP, 8080, i)
		addrs = append(addrs, peerIP+":8080")
	}
	c := start(t, 2, "-local-workers=false", "-upstream", addrs[0], "-upstream", addrs[1], "-admin-listen", "",
		"-health-interval", "200ms", "-health-timeout", "200ms")
	l := startLoad(t, c.url+"/operacion-simple", 16, 0)
	time.Sleep(500 * time.Millisecond)
	// Cut the first backend off: its link goes down, nothing answers, not
	// even a reset. Requests in flight to it are released when the health
	// checks mark it down, and go to the other backend.
	if out, err := exec.Command("ip", "link", "set", fmt.Sprintf("clbh%s1", tag), "down").CombinedOutput(); err != nil {
		t.Fatalf("link down: %v: %s", err, out)
	}
	c.waitFor("the cut-off upstream marked down", func(s statsDoc) bool { return s.Workers[0].State == "down" })
	time.Sleep(time.Second)
	l.check(t)
	s, _ := c.stats()
	if s.Workers[1].Requests == 0 {
		t.Errorf("the other upstream served nothing: %+v", s.Workers)
	}
}
