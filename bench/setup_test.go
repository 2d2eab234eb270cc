package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWithoutServiceStarts: during the install a policy-rc.d denies every
// service start; afterwards it is gone, unless it was there before, in
// which case it is left untouched.
func TestWithoutServiceStarts(t *testing.T) {
	logf := func(string, ...any) {}
	path := filepath.Join(t.TempDir(), "policy-rc.d")
	ran := false
	withoutServiceStarts(path, logf, func() {
		ran = true
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("during the install: %v; want a policy-rc.d", err)
		}
		if !strings.Contains(string(b), "exit 101") {
			t.Errorf("policy-rc.d = %q; want it to exit 101", b)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("policy-rc.d mode %v (%v); want it executable", fi.Mode(), err)
		}
	})
	if !ran {
		t.Fatal("install did not run")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("after the install: stat = %v; want the policy-rc.d removed", err)
	}

	const admins = "#!/bin/sh\nexit 0\n"
	if err := os.WriteFile(path, []byte(admins), 0o755); err != nil {
		t.Fatal(err)
	}
	withoutServiceStarts(path, logf, func() {})
	if b, err := os.ReadFile(path); err != nil || string(b) != admins {
		t.Errorf("an existing policy-rc.d: got %q (%v); want it left as it was", b, err)
	}
}
