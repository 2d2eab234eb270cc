package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tbalancer\nVmPeak:\t 1300000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 5000 kB\n"
	got, err := parseVmRSS(status)
	if err != nil || got != 12345*1024 {
		t.Errorf("got %d, %v; want %d", got, err, 12345*1024)
	}
	if _, err := parseVmRSS("Name:\tzombie\n"); err == nil {
		t.Error("no VmRSS line: got no error")
	}
}

func TestUpWorkers(t *testing.T) {
	body := `{"uptime_s": 1.5, "workers": [
		{"id": 1, "pid": 10, "addr": "127.0.0.1:40015", "state": "up", "restarts": 0},
		{"id": 2, "pid": 11, "addr": "127.0.0.1:40391", "state": "starting", "restarts": 2},
		{"id": 3, "pid": 12, "addr": "127.0.0.1:40400", "state": "up", "restarts": 1}]}`
	got, restarts, err := parseStats([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:40015", "127.0.0.1:40400"}; !slices.Equal(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
	if restarts != 3 {
		t.Errorf("got %d restarts; want 3", restarts)
	}
	if _, err := upWorkers([]byte("<html>")); err == nil {
		t.Error("not JSON: got no error")
	}
}

func TestProxyConfs(t *testing.T) {
	up := []string{"127.0.0.1:4001", "127.0.0.1:4002"}
	ngx := nginxConf("/tmp/x", "127.0.0.1:9000", up, 1)
	for _, want := range []string{
		"worker_processes 1;", "server 127.0.0.1:4001;", "server 127.0.0.1:4002;", "keepalive 64;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "access_log off;", "listen 127.0.0.1:9000;",
		"pid /tmp/x/nginx.pid;", "keepalive_timeout 4s;",
	} {
		if !strings.Contains(ngx, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, ngx)
		}
	}
	hap := haproxyConf("127.0.0.1:9001", up, 1)
	for _, want := range []string{
		"nbthread 1", "http-reuse always", "option http-keep-alive", "bind 127.0.0.1:9001",
		"server w1 127.0.0.1:4001", "server w2 127.0.0.1:4002",
	} {
		if !strings.Contains(hap, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, hap)
		}
	}
	if n := strings.Count(ngx, "keepalive_requests 1000000;"); n != 2 {
		t.Errorf("nginx.conf has keepalive_requests 1000000 %d times; want 2 (clients and upstreams):\n%s", n, ngx)
	}
	if bin, err := exec.LookPath("nginx"); err == nil {
		// nginx itself reads the file, where it is installed.
		dir := t.TempDir()
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConf(dir, "127.0.0.1:9000", up, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
			t.Errorf("nginx -t: %v\n%s", err, out)
		}
	}
	if ngx := nginxConf("/tmp/x", "127.0.0.1:9000", up, 4); !strings.Contains(ngx, "worker_processes 4;") {
		t.Errorf("-proxy-threads 4: nginx.conf lacks worker_processes 4:\n%s", ngx)
	}
	if hap := haproxyConf("127.0.0.1:9001", up, 4); !strings.Contains(hap, "nbthread 4\n") {
		t.Errorf("-proxy-threads 4: haproxy.cfg lacks nbthread 4:\n%s", hap)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-quick"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.reps != 1 || o.duration.Seconds() != 2 || len(o.only) != 5 {
		t.Errorf("-quick: got reps %d duration %s only %v; want 1, 2s, all five", o.reps, o.duration, o.only)
	}
	o, err = parseFlags([]string{"-quick", "-reps", "2", "-only", "a,e"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.reps != 2 || !o.only["a"] || !o.only["e"] || o.only["b"] {
		t.Errorf("explicit -reps and -only: got reps %d only %v", o.reps, o.only)
	}
	o, err = parseFlags([]string{"-render", "old/results.json", "-out", "elsewhere"}, &strings.Builder{})
	if err != nil || o.render != "old/results.json" || o.out != "elsewhere" {
		t.Errorf("-render with -out: got %q, %q, %v", o.render, o.out, err)
	}
	for _, bad := range [][]string{{"-only", "z"}, {"-reps", "0"}, {"-duration", "500ms"}, {"stray"},
		{"-render", "r.json", "-only", "a"}, {"-render", "r.json", "-quick"},
		{"-proxy-threads", "0"}, {"-render", "r.json", "-proxy-threads", "2"}} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q): got no error", bad)
		}
	}
}

func TestVersionLine(t *testing.T) {
	tests := []struct{ name, out, want string }{
		{"nginx", "nginx version: nginx/1.22.1\n", "nginx/1.22.1"},
		{"haproxy", "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\nStatus: ...", "HAProxy 2.6.12-1+deb12u4"},
		{"wrk", "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer\nUsage: ...", "wrk debian/4.1.0-3+b2"},
		{"node", "v20.20.2\n", "node v20.20.2"},
		{"artillery", "\nArtillery: 2.0.34\nNode.js:   v20.20.2\n", "Artillery 2.0.34"},
	}
	for _, tt := range tests {
		if got := versionLine(tt.name, tt.out); got != tt.want {
			t.Errorf("versionLine(%s) = %q; want %q", tt.name, got, tt.want)
		}
	}
}

func TestBalancerArgs(t *testing.T) {
	args, n := balancerArgs("lb", "127.0.0.1:1", balancerOpts{engine: "httputil", workers: 2})
	want := []string{"lb", "-listen", "127.0.0.1:1", "-admin-listen", "", "-workers", "2", "-engine", "httputil"}
	if !slices.Equal(args, want) || n != 2 {
		t.Errorf("own workers: got %q, %d; want %q, 2", args, n, want)
	}
	// Over another balancer's workers: no -workers, one -upstream each,
	// and as many up in /stats as there are upstreams.
	args, n = balancerArgs("lb", "127.0.0.1:1", balancerOpts{engine: "fasthttp", workers: 5, upstreams: []string{"127.0.0.1:2", "127.0.0.1:3"}})
	want = []string{"lb", "-listen", "127.0.0.1:1", "-admin-listen", "", "-local-workers=false",
		"-upstream", "127.0.0.1:2", "-upstream", "127.0.0.1:3", "-engine", "fasthttp"}
	if !slices.Equal(args, want) || n != 2 {
		t.Errorf("upstreams: got %q, %d; want %q, 2", args, n, want)
	}
}

// TestAliveFollowsHost: in scenario a, direct and the proxies over the
// host's workers are measured only while the host runs.
func TestAliveFollowsHost(t *testing.T) {
	done := make(chan struct{})
	close(done)
	host := &target{name: "balancer-httputil", proc: &proc{name: "balancer-httputil", done: done, waitErr: errors.New("signal: killed")}}
	running := &proc{name: "nginx", done: make(chan struct{})}
	for _, tt := range []*target{
		{name: "direct", direct: true, host: host},
		{name: "nginx", proc: running, host: host},
	} {
		err := tt.alive()
		if err == nil || !strings.Contains(err.Error(), "signal: killed") {
			t.Errorf("%s.alive() = %v; want the host's exit", tt.name, err)
		}
	}
	if err := (&target{name: "nginx", proc: running}).alive(); err != nil {
		t.Errorf("a running target without a host: alive() = %v; want nil", err)
	}
}

// TestChildEnv: a HOST from the bench's own environment does not reach the
// children, which would listen on it instead of 127.0.0.1.
func TestChildEnv(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "HOST=0.0.0.0", "HOSTNAME=box", "HOME=/root"}, []string{"PORT=8080"})
	want := []string{"PATH=/bin", "HOSTNAME=box", "HOME=/root", "PORT=8080"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv = %q; want %q", got, want)
	}
}
