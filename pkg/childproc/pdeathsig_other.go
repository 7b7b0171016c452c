//go:build !linux

package childproc

import "os/exec"

// SetParentDeathSignal is a no-op where the kernel has no such feature.
func SetParentDeathSignal(*exec.Cmd) {}
