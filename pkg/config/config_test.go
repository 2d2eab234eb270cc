package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePrecedence(t *testing.T) {
	file := writeFile(t, "workers: 3\npolicy: least-conn\nhealth_interval: 250ms\n")
	tests := []struct {
		name     string
		args     []string
		workers  int
		policy   string
		interval time.Duration
	}{
		{"defaults", nil, 0, "round-robin", time.Second},
		{"file over defaults", []string{"-config", file}, 3, "least-conn", 250 * time.Millisecond},
		{"flag over file", []string{"-config", file, "-workers", "5"}, 5, "least-conn", 250 * time.Millisecond},
		{"flag before -config still wins", []string{"-policy", "p2c", "-config", file}, 3, "p2c", 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse("balancer", tt.args, io.Discard)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.Workers != tt.workers || c.Policy != tt.policy || c.HealthInterval != tt.interval {
				t.Errorf("got workers=%d policy=%q interval=%v; want %d %q %v",
					c.Workers, c.Policy, c.HealthInterval, tt.workers, tt.policy, tt.interval)
			}
		})
	}
}

// TestAdminListenSet: set when a flag or the file gives admin_listen,
// even to the default's value; not otherwise.
func TestAdminListenSet(t *testing.T) {
	given := writeFile(t, "admin_listen: 127.0.0.1:9090\n")
	other := writeFile(t, "workers: 2\n")
	tests := []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"-config", other}, false},
		{[]string{"-config", given}, true},
		{[]string{"-admin-listen", "127.0.0.1:9090"}, true},
	}
	for _, tt := range tests {
		c, _, err := Parse("balancer", tt.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if c.AdminListenSet != tt.want {
			t.Errorf("%v: got AdminListenSet %v; want %v", tt.args, c.AdminListenSet, tt.want)
		}
	}
}

// TestOverridden: a setting is named when the file and a flag give it
// different values; not when they agree, nor when only one gives it.
func TestOverridden(t *testing.T) {
	file := writeFile(t, "workers: 3\npolicy: least-conn\nengine: fasthttp\nupstreams: [127.0.0.1:9]\n")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no file", []string{"-workers", "2"}, nil},
		{"no flag", []string{"-config", file}, nil},
		{"flags", []string{"-config", file, "-workers", "2", "-policy", "least-conn", "-listen", ":9000", "-upstream", "127.0.0.1:10"},
			[]string{"workers", "upstreams"}},
		{"flag before -config", []string{"-engine", "httputil", "-config", file}, []string{"engine"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Overridden("balancer", tt.args); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestParseErrorsNameTheSetting(t *testing.T) {
	badFile := writeFile(t, "workers: -1\n")
	badThirdLine := writeFile(t, "# the demo\nworkers: 2\npolicy: fastest\n")
	typoFile := writeFile(t, "wrokers: 2\n")
	syntaxFile := writeFile(t, "workers: [\n")
	fractionFile := writeFile(t, "workers: 2.5\n")
	bareDurationFile := writeFile(t, "health_interval: 5\n")
	twoDocsFile := writeFile(t, "workers: 1\n---\nworkers: 2\n")
	twiceFile := writeFile(t, "workers: 1\npolicy: p2c\nworkers: 2\n")
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"negative workers flag", []string{"-workers", "-3"}, []string{"workers", "-3"}},
		{"too many workers", []string{"-workers", "100000"}, []string{"workers"}},
		{"bad policy", []string{"-policy", "random"}, []string{"policy", "random"}},
		{"bad engine", []string{"-engine", "nginx"}, []string{"engine", "nginx"}},
		{"bad listen", []string{"-listen", "8080"}, []string{"listen", "8080"}},
		{"slowloris timeout too long", []string{"-read-header-timeout", "1m"}, []string{"read_header_timeout"}},
		{"zero interval", []string{"-health-interval", "0s"}, []string{"health_interval"}},
		{"fall zero", []string{"-health-fall", "0"}, []string{"health_fall"}},
		{"bad health path", []string{"-health-path", "health"}, []string{"health_path"}},
		{"bad stats path", []string{"-stats-path", "stats"}, []string{"stats_path"}},
		{"backoff max below min", []string{"-restart-backoff", "2s", "-restart-backoff-max", "1s"}, []string{"restart_backoff_max"}},
		{"retries below -1", []string{"-max-retries", "-2"}, []string{"max_retries"}},
		{"negative max memory", []string{"-max-memory", "-1"}, []string{"max_memory"}},
		{"admin on the public listener", []string{"-listen", "127.0.0.1:8080", "-admin-listen", "127.0.0.1:8080"}, []string{"admin_listen"}},
		{"bad admin address", []string{"-admin-listen", "9090"}, []string{"admin_listen"}},
		{"admin on every address without a token", []string{"-admin-listen", ":9091"}, []string{"admin_listen", "admin_token"}},
		{"admin on a public address without a token", []string{"-admin-listen", "10.1.2.3:9091"}, []string{"admin_listen", "admin_token"}},
		{"bad upstream", []string{"-upstream", "10.0.0.1"}, []string{"upstreams", "10.0.0.1"}},
		{"nothing to balance over", []string{"-local-workers=false"}, []string{"local_workers"}},
		{"probe on the stats path", []string{"-readyz-path", "/stats"}, []string{"readyz_path", "stats_path"}},
		{"bad value in file", []string{"-config", badFile}, []string{badFile, "workers", "line 1"}},
		{"bad value on a file's third line", []string{"-config", badThirdLine}, []string{badThirdLine + ": policy: line 3:", "fastest"}},
		{"unknown key in file", []string{"-config", typoFile}, []string{typoFile, "wrokers"}},
		{"syntax error in file", []string{"-config", syntaxFile}, []string{syntaxFile}},
		{"missing file", []string{"-config", "/nonexistent/balancer.yaml"}, []string{"/nonexistent/balancer.yaml"}},
		{"unknown flag", []string{"-wrokers", "2"}, []string{"wrokers"}},
		{"not a number", []string{"-workers", "two"}, []string{"workers"}},
		{"port past 65535", []string{"-listen", "127.0.0.1:99999"}, []string{"listen", "99999"}},
		{"port not a number", []string{"-listen", "127.0.0.1:notaport"}, []string{"listen", "notaport"}},
		{"admin port past 65535", []string{"-admin-listen", "127.0.0.1:99999"}, []string{"admin_listen", "99999"}},
		{"upstream twice", []string{"-upstream", "127.0.0.1:9", "-upstream", "127.0.0.1:9"}, []string{"upstreams", "twice"}},
		{"upstream port 0", []string{"-upstream", "127.0.0.1:0"}, []string{"upstreams"}},
		{"stats path with a space", []string{"-stats-path", "/a b"}, []string{"stats_path"}},
		{"probe path with a pattern", []string{"-livez-path", "/{x"}, []string{"livez_path"}},
		{"stats path on a probe's", []string{"-stats-path", "/livez"}, []string{"livez_path", "stats_path"}},
		{"backoff factor not a number", []string{"-restart-backoff-factor", "NaN"}, []string{"restart_backoff_factor"}},
		{"fraction for a whole number in file", []string{"-config", fractionFile}, []string{fractionFile, "workers", "2.5", "line 1"}},
		{"bare number for a duration in file", []string{"-config", bareDurationFile}, []string{bareDurationFile, "health_interval", "duration"}},
		{"two documents in file", []string{"-config", twoDocsFile}, []string{twoDocsFile, "second YAML document", "line 2"}},
		{"key twice in file", []string{"-config", twiceFile}, []string{twiceFile, "workers", "line 3", "line 1"}},
		{"stray argument", []string{"extra"}, []string{"extra"}},
		{"true/false flag's value after a space", []string{"-upstream", "127.0.0.1:9", "-local-workers", "false"}, []string{"-local-workers=false"}},
		{"recycle count past int64", []string{"-max-requests", "1000", "-max-requests-jitter", "9223372036854775807"}, []string{"max_requests_jitter"}},
		{"jitter alone past int64", []string{"-max-requests-jitter", "9223372036854775807"}, []string{"max_requests_jitter"}},
		{"header bound past any buffer", []string{"-max-header-bytes", "9223372036854775807"}, []string{"max_header_bytes"}},
		{"negative connection bound", []string{"-max-conns", "-1"}, []string{"max_conns", "-1"}},
		{"health path with a bad escape", []string{"-health-path", "/%zz"}, []string{"health_path", "%zz"}},
		{"health path with a space", []string{"-health-path", "/a b"}, []string{"health_path", "/a b"}},
		{"health path with a fragment", []string{"-health-path", "/health#x"}, []string{"health_path"}},
		{"admin on the public port, any host", []string{"-listen", ":18080", "-admin-listen", "127.0.0.1:18080"}, []string{"admin_listen"}},
		{"readiness past the workers", []string{"-workers", "1", "-ready-min-workers", "5"}, []string{"ready_min_workers", "5"}},
		{"readiness past the upstreams", []string{"-local-workers=false", "-upstream", "127.0.0.1:9", "-ready-min-workers", "2"}, []string{"ready_min_workers"}},
		{"no value in file", []string{"-config", writeFile(t, "admin_listen:\n")}, []string{"admin_listen", "line 1", "no value"}},
		{"flag's spelling in file", []string{"-config", writeFile(t, "health-path: /x\n")}, []string{"health-path", "line 1", "writes it health_path"}},
		{"quoted number in file", []string{"-config", writeFile(t, "workers: \"2\"\n")}, []string{"workers", "line 1", "without quotes"}},
		{"quoted word for a number in file", []string{"-config", writeFile(t, "workers: \"two\"\n")}, []string{"workers", "line 1", "want a whole number", `"two"`}},
		{"one value for a list in file", []string{"-config", writeFile(t, "upstreams: 127.0.0.1:9\n")}, []string{"upstreams", "line 1", "want a list", "- 127.0.0.1:9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			_, _, err := Parse("balancer", tt.args, &out)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded; want an error", tt.args)
			}
			msg := err.Error() + out.String()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("got %q; want it to name %q", msg, w)
				}
			}
		})
	}
}

// TestFlagErrorNotBlamedOnFile: a bad value given as a flag is the
// flag's, not the file's, also where the flag's name is not the key's.
func TestFlagErrorNotBlamedOnFile(t *testing.T) {
	file := writeFile(t, "workers: 1\n")
	_, _, err := Parse("balancer", []string{"-config", file, "-upstream", "10.0.0.1"}, io.Discard)
	if err == nil || strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "upstreams") {
		t.Errorf("got %v; want upstreams named, not the file", err)
	}
}

// TestDefaultErrorNotBlamedOnFile: a setting the file does not give is
// not the file's fault, though its check failed after a flag moved
// another (restart_backoff past the default restart_backoff_max).
func TestDefaultErrorNotBlamedOnFile(t *testing.T) {
	file := writeFile(t, "log_level: info\n")
	_, _, err := Parse("balancer", []string{"-config", file, "-restart-backoff", "20s"}, io.Discard)
	if err == nil || strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "restart_backoff_max") {
		t.Errorf("got %v; want restart_backoff_max named, not the file", err)
	}
	file = writeFile(t, "restart_backoff_max: 50ms\n")
	_, _, err = Parse("balancer", []string{"-config", file}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("got %v; want the file named: it set restart_backoff_max", err)
	}
}

// TestAdminBesideListenOnPortZero: two listeners on port 0 never collide.
func TestAdminBesideListenOnPortZero(t *testing.T) {
	if _, _, err := Parse("balancer", []string{"-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, io.Discard); err != nil {
		t.Errorf("got %v; want both on port 0 accepted", err)
	}
}

// TestAdminBeyondLoopbackWithToken: the admin API listens past loopback
// only with a token; on loopback it needs none.
func TestAdminBeyondLoopbackWithToken(t *testing.T) {
	for _, args := range [][]string{
		{"-admin-listen", ":9091", "-admin-token", "s3cret"},
		{"-admin-listen", "localhost:9091"},
		{"-admin-listen", "[::1]:9091"},
		{"-admin-listen", "127.0.0.2:9091"},
	} {
		if _, _, err := Parse("balancer", args, io.Discard); err != nil {
			t.Errorf("Parse(%q): %v; want it accepted", args, err)
		}
	}
}

func TestFlagFixesBadFileValue(t *testing.T) {
	file := writeFile(t, "workers: -1\n")
	c, _, err := Parse("balancer", []string{"-config", file, "-workers", "2"}, io.Discard)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.Workers != 2 {
		t.Errorf("got workers %d; want 2", c.Workers)
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, _, err := Parse("balancer", []string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v; want flag.ErrHelp", err)
	}
	for _, name := range []string{"-listen", "-workers", "-cmd", "-policy", "-engine", "-config"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("usage lacks %s", name)
		}
	}
}

func TestHealthCheckResolution(t *testing.T) {
	tests := []struct {
		name, cmd, path, want string
	}{
		{"built-in default", "", "", "/health"},
		{"cmd default is OPTIONS *", "node app.js", "", "*"},
		{"cmd with tcp", "node app.js", "tcp", ""},
		{"cmd with path", "node app.js", "/ping", "/ping"},
		{"explicit tcp", "", "tcp", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Cmd, c.HealthPath = tt.cmd, tt.path
			if got := c.HealthCheck(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestShippedConfigIsValid(t *testing.T) {
	c, _, err := Parse("balancer", []string{"-config", "../../configs/balancer.yaml"}, io.Discard)
	if err != nil {
		t.Fatalf("configs/balancer.yaml: %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("configs/balancer.yaml differs from the defaults:\ngot  %+v\nwant %+v", c, Default())
	}
}

func TestUpstreamFlagsReplaceTheFile(t *testing.T) {
	file := writeFile(t, "upstreams: [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n")
	c, _, err := Parse("balancer", []string{"-config", file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Upstreams; !reflect.DeepEqual(got, []string{"127.0.0.1:7001", "127.0.0.1:7002"}) {
		t.Errorf("from the file: got %q", got)
	}
	c, _, err = Parse("balancer", []string{"-config", file, "-upstream", "127.0.0.1:9001", "-upstream", "127.0.0.1:9002"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Upstreams, []string{"127.0.0.1:9001", "127.0.0.1:9002"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q; want the flags' %q", got, want)
	}
}

// TestLoadFileAccepts: what YAML allows and the decoder took before the
// file was read key by key still loads, to the same values.
func TestLoadFileAccepts(t *testing.T) {
	tests := []struct {
		name, file string
		check      func(c Config) bool
	}{
		{"merge key", "<<: {workers: 2}\n", func(c Config) bool { return c.Workers == 2 }},
		{"merge key under its own key", "base: &b {workers: 2, policy: p2c}\n", nil}, // no such setting: base
		{"merged, then given", "<<: {workers: 2}\nworkers: 3\n", func(c Config) bool { return c.Workers == 3 }},
		{"a --- at the end", "workers: 2\n---\n", func(c Config) bool { return c.Workers == 2 }},
		{"a ... at the end", "workers: 2\n...\n", func(c Config) bool { return c.Workers == 2 }},
		{"a whole number as a float", "max_memory: 1e9\n", func(c Config) bool { return c.MaxMemory == 1e9 }},
		{"hex and underscores", "max_memory: 0x40000000\nmax_requests: 1_000\n", func(c Config) bool { return c.MaxMemory == 1<<30 && c.MaxRequests == 1000 }},
		{"anchor and alias", "health_interval: &d 2s\nhealth_timeout: *d\nhealth_rise: &n 3\nhealth_fall: *n\n",
			func(c Config) bool { return c.HealthTimeout == 2*time.Second && c.HealthFall == 3 }},
		{"a whole factor", "restart_backoff_factor: 2\n", func(c Config) bool { return c.RestartBackoffFactor == 2 }},
		{"only comments", "# nothing\n", func(c Config) bool { return c.Workers == Default().Workers }},
		{"a bare 0 for a duration", "shutdown_grace: 0\n", func(c Config) bool { return c.ShutdownGrace == 0 }},
		{"merged list: the first mapping wins", "<<: [{policy: p2c}, {policy: least-conn}]\n", func(c Config) bool { return c.Policy == "p2c" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := c.LoadFile(writeFile(t, tt.file))
			if tt.check == nil {
				if err == nil {
					t.Errorf("got no error; want one")
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Errorf("got %v, %+v; want it loaded", err, c)
			}
		})
	}
	// A type error names its line once.
	c := Default()
	err := c.LoadFile(writeFile(t, "access_log: maybe\n"))
	if err == nil || strings.Count(err.Error(), "line 1") != 1 {
		t.Errorf("got %v; want one mention of line 1", err)
	}
}

// TestHelpNamesTheSubcommands: -h shows the status and backend
// subcommands beside the flags, so that they can be found from it.
func TestHelpNamesTheSubcommands(t *testing.T) {
	var out strings.Builder
	_, _, err := Parse("balancer", []string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v; want flag.ErrHelp", err)
	}
	for _, want := range []string{"balancer status", "balancer backend", "-workers"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help has no %q:\n%s", want, out.String())
		}
	}
}
