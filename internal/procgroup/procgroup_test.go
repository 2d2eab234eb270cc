package procgroup

import (
	"os/exec"
	"syscall"
	"testing"
)

// TestAttrNewGroup: a child started with Attr leads a process group of
// its own, apart from the test's.
func TestAttrNewGroup(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	cmd.SysProcAttr = Attr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	pgid, err := syscall.Getpgid(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid != cmd.Process.Pid {
		t.Errorf("child's process group: got %d; want its own, %d", pgid, cmd.Process.Pid)
	}
	if pgid == syscall.Getpgrp() {
		t.Errorf("child is in the test's process group (%d)", pgid)
	}
}
