//go:build !linux

package numa

import (
	"errors"
	"fmt"

	"k8s.io/utils/cpuset"
)

// Pin is only implemented on Linux.
func Pin(cpus cpuset.CPUSet) error {
	return fmt.Errorf("pin to %s: %w", cpus, errors.ErrUnsupported)
}

// Affinity is only implemented on Linux.
func Affinity(int) (cpuset.CPUSet, error) {
	return cpuset.CPUSet{}, fmt.Errorf("affinity: %w", errors.ErrUnsupported)
}

// ThreadIDs is only implemented on Linux.
func ThreadIDs() ([]int, error) {
	return nil, fmt.Errorf("thread ids: %w", errors.ErrUnsupported)
}

// PreferMemory is only implemented on Linux.
func PreferMemory(node int) error {
	return fmt.Errorf("prefer memory on node %d: %w", node, errors.ErrUnsupported)
}

// IsUnsupported reports whether err means memory policies are unavailable.
func IsUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }
