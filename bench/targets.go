package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// target is one thing under load: its base URL ("http://127.0.0.1:P"),
// or, for "direct", the worker addresses that wrk hits in parallel.
type target struct {
	name    string
	base    string
	workers []string // a balancer's worker addresses, from its /stats
	direct  bool     // load the workers themselves, one wrk each
	proc    *proc    // nil for direct
	rssPID  int      // the balancer's pid, whose RSS is sampled; 0 = none
	stats   string   // the balancer's /stats URL; "" for the others
	host    *target  // the balancer that owns the workers it loads, when not itself
	apps    []*proc  // worker processes started for it alone (scenario b's nginx and haproxy); they stop with it
	err     error    // it did not start: every run against it fails with this

	restarts int64 // worker restarts seen so far in /stats
}

// alive says why the target cannot take a run, or nil. A target that
// loads another balancer's workers (host set) is down when that balancer
// is: its workers die with it, and nginx, haproxy or a balancer in front
// of them would answer 502s at a rate that reads like a figure, while
// direct, which has no process of its own, would only fail to connect.
func (t *target) alive() error {
	if t.err != nil {
		return t.err
	}
	if t.proc != nil && t.proc.exited() {
		return fmt.Errorf("%s exited: %v: %s", t.name, t.proc.waitErr, t.proc.logTail())
	}
	if t.host != nil {
		if err := t.host.alive(); err != nil {
			return fmt.Errorf("%s: the balancer that runs its workers is down: %w", t.name, err)
		}
	}
	for _, p := range t.apps {
		if p.exited() {
			return fmt.Errorf("%s: its worker %s exited: %v: %s", t.name, p.name, p.waitErr, p.logTail())
		}
	}
	return nil
}

// balancerOpts are the balancer flags a scenario varies.
type balancerOpts struct {
	engine  string // "" = the balancer's default
	policy  string // "" = the balancer's default
	workers int
	cmd     string // "" = the built-in backend
	// upstreams are backends the balancer did not start: given these, it
	// runs no workers of its own (-local-workers=false -upstream ...) and
	// workers is ignored.
	upstreams []string
	extra     []string // more flags
	maxConns  int      // -worker-max-conns; 0 = the default
}

// startBalancer runs the balancer and waits until /stats shows all its
// workers (or upstreams) up; the target keeps their addresses.
func (b *bench) startBalancer(ctx context.Context, name string, o balancerOpts) *target {
	t := &target{name: name}
	port, err := freePort()
	if err != nil {
		t.err = err
		return t
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	args, n := balancerArgs(b.tools.balancer, listen, o)
	p, err := b.procs.start(name, nil, args...)
	if err != nil {
		t.err = err
		return t
	}
	t.proc, t.rssPID, t.base, t.stats = p, p.pid(), "http://"+listen, "http://"+listen+"/stats"
	workers, err := waitStats(ctx, p, t.stats, n, 60*time.Second)
	if err != nil {
		t.err = fmt.Errorf("%s: %w", name, err)
		b.procs.stop(p, 5*time.Second)
		return t
	}
	t.workers = workers
	return t
}

// balancerArgs is the balancer's command line for o, listening on
// listen, and the number of workers its /stats should show up.
func balancerArgs(bin, listen string, o balancerOpts) (args []string, n int) {
	args = []string{bin, "-listen", listen, "-admin-listen", ""}
	n = o.workers
	if len(o.upstreams) > 0 {
		args = append(args, "-local-workers=false")
		for _, u := range o.upstreams {
			args = append(args, "-upstream", u)
		}
		n = len(o.upstreams)
	} else {
		args = append(args, "-workers", strconv.Itoa(o.workers))
	}
	if o.engine != "" {
		args = append(args, "-engine", o.engine)
	}
	if o.policy != "" {
		args = append(args, "-policy", o.policy)
	}
	if o.maxConns > 0 {
		args = append(args, "-worker-max-conns", strconv.Itoa(o.maxConns))
	}
	if o.cmd != "" {
		args = append(args, "-cmd", o.cmd)
	}
	return append(args, o.extra...), n
}

// statsReply is the part of the balancer's /stats the bench reads.
type statsReply struct {
	Workers []struct {
		ID       int    `json:"id"`
		PID      int    `json:"pid"`
		Addr     string `json:"addr"`
		State    string `json:"state"`
		Restarts int64  `json:"restarts"`
	} `json:"workers"`
}

// upWorkers returns the addresses of the workers in state "up", in id order.
func upWorkers(body []byte) ([]string, error) {
	addrs, _, err := parseStats(body)
	return addrs, err
}

// parseStats returns the addresses of the workers in state "up", in id
// order, and the restarts of all the workers.
func parseStats(body []byte) (up []string, restarts int64, err error) {
	var s statsReply
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, 0, fmt.Errorf("/stats: %w", err)
	}
	for _, w := range s.Workers {
		restarts += w.Restarts
		if w.State == "up" && w.Addr != "" {
			up = append(up, w.Addr)
		}
	}
	return up, restarts, nil
}

// workerState reads a balancer's /stats now.
func workerState(ctx context.Context, t *target) (up []string, restarts int64, err error) {
	body, err := get(ctx, t.stats)
	if err != nil {
		return nil, 0, err
	}
	return parseStats(body)
}

// waitStats polls /stats until n workers are up, the process exits, or
// the timeout passes.
func waitStats(ctx context.Context, p *proc, url string, n int, timeout time.Duration) ([]string, error) {
	var last error
	err := poll(ctx, p, timeout, func() bool {
		body, err := get(ctx, url)
		if err != nil {
			last = err
			return false
		}
		addrs, err := upWorkers(body)
		if err != nil {
			last = err
			return false
		}
		if len(addrs) >= n {
			return true
		}
		last = fmt.Errorf("%d of %d workers up", len(addrs), n)
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("%w (last: %v)", err, last)
	}
	body, _ := get(ctx, url)
	return upWorkers(body)
}

// poll calls ready every 100ms until it returns true. It fails when p
// exits first (with the end of its log), when the timeout passes or the
// context ends.
func poll(ctx context.Context, p *proc, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("exited before it was ready (%v): %s", p.waitErr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// noKeepAlive opens a new connection per request, so that polls of Node's
// cluster reach different workers.
var noKeepAlive = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	var last error
	err := poll(ctx, p, timeout, func() bool {
		_, last = get(ctx, url)
		return last == nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return nil
}

// startProxy writes conf into its own directory and runs nginx or
// haproxy in the foreground as the bench's child.
func (b *bench) startProxy(ctx context.Context, name string, workers []string) *target {
	t := &target{name: name}
	if len(workers) == 0 {
		t.err = errors.New(name + ": no workers to proxy to")
		return t
	}
	port, err := freePort()
	if err != nil {
		t.err = err
		return t
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	dir := filepath.Join(b.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.err = err
		return t
	}
	var argv []string
	switch name {
	case "nginx":
		if b.tools.nginx == "" {
			t.err = errors.New("nginx is not installed")
			return t
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConf(dir, listen, workers, b.opts.proxyThreads)), 0o644); err != nil {
			t.err = err
			return t
		}
		// -e: nginx opens its error log before it reads the config, and
		// the default one is under /var/log.
		argv = []string{b.tools.nginx, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}
	case "haproxy":
		if b.tools.haproxy == "" {
			t.err = errors.New("haproxy is not installed")
			return t
		}
		conf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(conf, []byte(haproxyConf(listen, workers, b.opts.proxyThreads)), 0o644); err != nil {
			t.err = err
			return t
		}
		argv = []string{b.tools.haproxy, "-f", conf, "-db"}
	default:
		t.err = fmt.Errorf("unknown proxy %q", name)
		return t
	}
	p, err := b.procs.start(name, nil, argv...)
	if err != nil {
		t.err = err
		return t
	}
	t.proc, t.base = p, "http://"+listen
	if err := waitHTTP(ctx, p, t.base+pathSimple, 15*time.Second); err != nil {
		t.err = fmt.Errorf("%s: %w", name, err)
		b.procs.stop(p, 5*time.Second)
	}
	return t
}

// startNodeCluster runs bench/node/cluster.js with n workers and waits
// until every one of them has answered /health.
func (b *bench) startNodeCluster(ctx context.Context, n int) *target {
	t := &target{name: "node-cluster"}
	if b.tools.node == "" {
		t.err = errors.New("node is not installed")
		return t
	}
	port, err := freePort()
	if err != nil {
		t.err = err
		return t
	}
	env := []string{"PORT=" + strconv.Itoa(port), "CLUSTER_WORKERS=" + strconv.Itoa(n)}
	p, err := b.procs.start(t.name, env, b.tools.node, filepath.Join(b.root, "bench", "node", "cluster.js"))
	if err != nil {
		t.err = err
		return t
	}
	t.proc, t.base = p, "http://127.0.0.1:"+strconv.Itoa(port)
	seen := map[string]bool{}
	var last error
	err = poll(ctx, p, 30*time.Second, func() bool {
		body, err := get(ctx, t.base+"/health")
		if err != nil {
			last = err
			return false
		}
		var h struct {
			Worker json.Number `json:"worker"`
		}
		if err := json.Unmarshal(body, &h); err != nil {
			last = err
			return false
		}
		seen[h.Worker.String()] = true
		last = fmt.Errorf("%d of %d workers answered", len(seen), n)
		return len(seen) >= n
	})
	if err != nil {
		t.err = fmt.Errorf("node cluster: %w (last: %v)", err, last)
		b.procs.stop(p, 5*time.Second)
	}
	return t
}

// startNodeProxy runs n processes of the course's Express app
// (bench/node/app.js, each on its own port, as the balancer's -cmd runs
// them) and the proxy name ("nginx" or "haproxy") in front of them.
func (b *bench) startNodeProxy(ctx context.Context, name string, n int) *target {
	if b.tools.node == "" {
		return &target{name: name, err: errors.New("node is not installed")}
	}
	var apps []*proc
	var addrs []string
	for id := 1; id <= n; id++ {
		port, err := freePort()
		var p *proc
		if err == nil {
			env := []string{"PORT=" + strconv.Itoa(port), "WORKER_ID=" + strconv.Itoa(id)}
			p, err = b.procs.start(fmt.Sprintf("%s-node-%d", name, id), env, b.tools.node, filepath.Join(b.root, "bench", "node", "app.js"))
		}
		if err == nil {
			apps = append(apps, p)
			addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
			err = waitHTTP(ctx, p, "http://"+addrs[len(addrs)-1]+pathSimple, 15*time.Second)
		}
		if err != nil {
			b.stopProcs(apps)
			return &target{name: name, err: fmt.Errorf("%s: node app.js %d: %w", name, id, err)}
		}
	}
	t := b.startProxy(ctx, name, addrs)
	if t.err != nil {
		b.stopProcs(apps)
		return t
	}
	t.apps = apps
	return t
}

func (b *bench) stopProcs(ps []*proc) {
	for _, p := range ps {
		b.procs.stop(p, 15*time.Second)
	}
}

// startBackend runs the demo backend alone: the course's "one process".
// With PORT set it listens on 127.0.0.1:PORT.
func (b *bench) startBackend(ctx context.Context) *target {
	t := &target{name: "one-process"}
	port, err := freePort()
	if err != nil {
		t.err = err
		return t
	}
	p, err := b.procs.start(t.name, []string{"PORT=" + strconv.Itoa(port)}, b.tools.backend)
	if err != nil {
		t.err = err
		return t
	}
	t.proc, t.base = p, "http://127.0.0.1:"+strconv.Itoa(port)
	if err := waitHTTP(ctx, p, t.base+pathSimple, 15*time.Second); err != nil {
		t.err = fmt.Errorf("backend: %w", err)
		b.procs.stop(p, 5*time.Second)
	}
	return t
}

// stopTargets stops the processes behind ts.
func (b *bench) stopTargets(ts ...*target) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		if t.proc != nil {
			b.procs.stop(t.proc, 15*time.Second)
		}
		b.stopProcs(t.apps)
	}
}

// readRSS returns VmRSS of pid in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// parseVmRSS reads the "VmRSS:   12345 kB" line of /proc/PID/status.
func parseVmRSS(status string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line")
}

// sampleRSS reads pid's RSS every 200ms until stop is closed, then sends
// the peak on the returned channel.
func sampleRSS(pid int, stop <-chan struct{}) <-chan int64 {
	peak := make(chan int64, 1)
	go func() {
		var m int64
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := readRSS(pid); err == nil {
				m = max(m, v)
			}
			select {
			case <-stop:
				peak <- m
				return
			case <-tick.C:
			}
		}
	}()
	return peak
}
