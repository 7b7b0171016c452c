package childproc

import (
	"os/exec"
	"syscall"
)

// SetParentDeathSignal makes the kernel send the child SIGTERM when this
// process dies, so that no worker outlives a killed supervisor.
func SetParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
