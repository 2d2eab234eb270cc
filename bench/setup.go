package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// artilleryVersion is the Artillery the course uses; bench/README.md
// installs the same one. The bench installs it only when no artillery is
// on PATH; the report says which one ran.
const artilleryVersion = "2.0.34"

// tools are the programs the scenarios run, as absolute paths; "" means
// missing, and the scenarios that need it are reported as failed.
type tools struct {
	wrk, nginx, haproxy, node, npm, artillery string
	balancer, backend                         string // built by the bench
	// artilleryFrom says where artillery was found, for the report.
	artilleryFrom string
}

// lookTool finds name on PATH or in the sbin directories, where Debian
// puts nginx and haproxy and which a non-root PATH often lacks.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		p, _ = filepath.Abs(p)
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// need says which tools the selected scenarios use.
type need struct{ wrk, proxies, node, artillery bool }

func needsFor(only map[string]bool) need {
	return need{
		wrk:       only["a"] || only["b"] || only["d"] || only["e"],
		proxies:   only["a"],
		node:      only["b"] || only["c"],
		artillery: only["c"],
	}
}

// ensureTools finds the tools and installs the missing ones: Debian's
// packages with apt-get (as root only), Artillery with npm into
// bench/.cache, and the Node app's modules with npm ci.
func ensureTools(ctx context.Context, root string, n need, logf func(string, ...any)) tools {
	var t tools
	find := func() {
		t.wrk, t.nginx, t.haproxy = lookTool("wrk"), lookTool("nginx"), lookTool("haproxy")
		t.node, t.npm = lookTool("node"), lookTool("npm")
	}
	find()
	var pkgs []string
	if n.wrk && t.wrk == "" {
		pkgs = append(pkgs, "wrk")
	}
	if n.proxies && t.nginx == "" {
		pkgs = append(pkgs, "nginx-light")
	}
	if n.proxies && t.haproxy == "" {
		pkgs = append(pkgs, "haproxy")
	}
	if (n.node || n.artillery) && (t.node == "" || t.npm == "") {
		pkgs = append(pkgs, "nodejs", "npm")
	}
	if len(pkgs) > 0 {
		if os.Geteuid() != 0 {
			logf("missing %s and not root: install them with `apt-get install -y %s`; the scenarios that need them will fail",
				strings.Join(pkgs, ", "), strings.Join(pkgs, " "))
		} else {
			logf("installing %s with apt-get", strings.Join(pkgs, " "))
			env := []string{"DEBIAN_FRONTEND=noninteractive"}
			if out, err := output(ctx, env, "", "apt-get", "update"); err != nil {
				logf("apt-get update: %v: %s", err, tail(out, 3))
			}
			args := append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, pkgs...)
			withoutServiceStarts(policyRCD, logf, func() {
				if out, err := output(ctx, env, "", args...); err != nil {
					logf("apt-get install: %v: %s", err, tail(out, 3))
				}
			})
			find()
		}
	}

	if n.node && t.npm != "" {
		nodeDir := filepath.Join(root, "bench", "node")
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "express", "package.json")); err != nil {
			logf("npm ci in bench/node")
			if out, err := output(ctx, nil, nodeDir, t.npm, "ci", "--no-audit", "--no-fund"); err != nil {
				logf("npm ci: %v: %s", err, tail(out, 3))
			}
		}
	}

	if n.artillery {
		t.artillery = lookTool("artillery")
		if t.artillery != "" {
			t.artilleryFrom = "found on PATH"
		}
		cache := filepath.Join(root, "bench", ".cache", "artillery")
		local := filepath.Join(cache, "node_modules", ".bin", "artillery")
		const fromCache = "from bench/.cache/artillery"
		if t.artillery == "" {
			if _, err := os.Stat(local); err == nil {
				t.artillery, t.artilleryFrom = local, fromCache
			}
		}
		if t.artillery == "" && t.npm != "" {
			logf("installing artillery@%s into bench/.cache/artillery (takes a minute)", artilleryVersion)
			if err := os.MkdirAll(cache, 0o755); err != nil {
				logf("artillery: %v", err)
			}
			env := []string{"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "PUPPETEER_SKIP_DOWNLOAD=1"}
			out, err := output(ctx, env, cache, t.npm, "install", "--no-audit", "--no-fund",
				"--prefix", cache, "artillery@"+artilleryVersion)
			if err != nil {
				logf("npm install artillery: %v: %s", err, tail(out, 3))
			} else if _, err := os.Stat(local); err == nil {
				t.artillery, t.artilleryFrom = local, fromCache
			}
		}
	}
	return t
}

// policyRCD is the local policy that Debian's maintainer scripts ask
// (through invoke-rc.d or deb-systemd-invoke) before they start a service.
const policyRCD = "/usr/sbin/policy-rc.d"

// denyAll is a policy-rc.d that forbids every action: exit code 101.
const denyAll = "#!/bin/sh\n# Written by go run ./bench for the length of its apt-get install.\nexit 101\n"

// withoutServiceStarts runs install with a policy-rc.d at path that
// forbids starting services, and removes it afterwards, if it wrote it.
//
// Installing nginx-light and haproxy starts their system services: nginx
// on port 80 of every address, haproxy with the packaged config. They
// would run through the measurements, and after the bench, outside its
// bookkeeping of what it started. Keeping them from starting is safer
// than stopping them after the install: nothing binds port 80 even for
// a moment, and a postinst whose start fails (port 80 taken) does not
// fail the install. The services stay enabled for the next boot, as
// Debian installs them. A policy-rc.d that is already there belongs to
// the machine's admin: it is left as it is, and decides.
func withoutServiceStarts(path string, logf func(string, ...any), install func()) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			logf("%s exists: left as it is, it decides whether the installed services start", path)
		} else {
			logf("%v: the installed nginx and haproxy services may start; `systemctl stop nginx haproxy` stops them", err)
		}
		install()
		return
	}
	_, err = f.WriteString(denyAll)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	defer os.Remove(path)
	if err != nil {
		logf("write %s: %v: the installed nginx and haproxy services may start", path, err)
	} else {
		logf("installing with %s denying service starts: the packages' nginx and haproxy services are not started (they stay enabled for the next boot)", path)
	}
	install()
}

// gitState is the commit checked out at root and whether the tree has
// changes not in it (untracked files included: a new source file is
// built too).
func gitState(ctx context.Context, root string) (commit string, dirty bool, err error) {
	out, err := output(ctx, nil, root, "git", "rev-parse", "HEAD")
	if err != nil {
		return "", false, fmt.Errorf("git rev-parse HEAD: %w: %s", err, tail(out, 1))
	}
	commit = strings.TrimSpace(out)
	out, err = output(ctx, nil, root, "git", "status", "--porcelain")
	if err != nil {
		return commit, false, fmt.Errorf("git status: %w: %s", err, tail(out, 1))
	}
	return commit, strings.TrimSpace(out) != "", nil
}

// build compiles the balancer and the backend into dir.
func build(ctx context.Context, root, dir string) (balancer, backend string, err error) {
	out, err := output(ctx, nil, root, "go", "build", "-o", dir+string(os.PathSeparator), "./balancer", "./backend")
	if err != nil {
		return "", "", fmt.Errorf("go build ./balancer ./backend: %w: %s", err, tail(out, 5))
	}
	return filepath.Join(dir, "balancer"), filepath.Join(dir, "backend"), nil
}

// repoRoot walks up from the working directory to the go.mod of this
// module, so the bench finds bench/node and docs/ wherever it is run.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/clusterlb/clusterlb") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the clusterlb module: run it from the repository (go run ./bench)")
		}
		dir = parent
	}
}

// machine describes where the figures were measured.
type machine struct {
	CPU      string            `json:"cpu"`
	Cores    int               `json:"cores"`
	Kernel   string            `json:"kernel"`
	Versions map[string]string `json:"versions"` // tool -> version line
	// ArtilleryFrom says whether the Artillery that ran was found on PATH
	// (whatever its version) or installed by the bench; "" when unknown.
	ArtilleryFrom string `json:"artillery_from,omitempty"`
}

func describeMachine(ctx context.Context, t tools) machine {
	m := machine{CPU: cpuModel(), Cores: runtime.NumCPU(), Versions: map[string]string{}}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Versions["go"] = runtime.Version()
	ver := func(name, bin string, args ...string) {
		if bin == "" {
			m.Versions[name] = "not installed"
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		out, _ := output(ctx, nil, "", append([]string{bin}, args...)...)
		m.Versions[name] = versionLine(name, out)
	}
	ver("nginx", t.nginx, "-v")
	ver("haproxy", t.haproxy, "-v")
	ver("node", t.node, "--version")
	ver("wrk", t.wrk, "-v")
	if t.artillery != "" {
		ver("artillery", t.artillery, "--version")
		m.ArtilleryFrom = t.artilleryFrom
	}
	return m
}

// versionLine picks the version out of a tool's banner.
func versionLine(name, out string) string {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case name == "nginx" && strings.HasPrefix(line, "nginx version:"):
			return strings.TrimSpace(strings.TrimPrefix(line, "nginx version:"))
		case name == "haproxy" && strings.HasPrefix(line, "HAProxy version"):
			f := strings.Fields(line)
			if len(f) >= 3 {
				return "HAProxy " + f[2]
			}
		case name == "wrk" && strings.HasPrefix(line, "wrk "):
			if i := strings.Index(line, " ["); i > 0 {
				return line[:i]
			}
			return line
		case name == "artillery" && strings.HasPrefix(line, "Artillery:"):
			return "Artillery " + strings.TrimSpace(strings.TrimPrefix(line, "Artillery:"))
		case name == "node" && strings.HasPrefix(line, "v"):
			return "node " + line
		}
	}
	return "unknown (" + tail(out, 1) + ")"
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, val, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown"
}
