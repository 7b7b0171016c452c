package numa

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/utils/cpuset"
)

// maxPinPasses bounds the passes over /proc/self/task: a thread started by
// a not-yet-pinned thread during one pass is caught by the next.
const maxPinPasses = 10

// Pin restricts every thread of the process to cpus and sets GOMAXPROCS to
// the number of CPUs the process may then run on. sched_setaffinity(2)
// applies to one thread only, so Pin walks /proc/self/task until a pass
// finds no thread it has not pinned yet; threads created later inherit the
// affinity of the thread that creates them.
//
// Pin changes the whole process: call it once, early, and only in a process
// that serves a single NUMA node.
func Pin(cpus cpuset.CPUSet) error {
	if cpus.IsEmpty() {
		return errors.New("pin: empty cpu set")
	}
	list := cpus.List()
	mask := unix.NewCPUSet(list[len(list)-1] + 1)
	for _, c := range list {
		mask.Set(c)
	}
	pinned := map[int]bool{}
	for pass := 0; pass < maxPinPasses; pass++ {
		tids, err := ThreadIDs()
		if err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		fresh := 0
		for _, tid := range tids {
			if pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinityDynamic(tid, mask); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread exited meanwhile
				}
				return fmt.Errorf("pin: set affinity of thread %d to %s: %w", tid, cpus, err)
			}
			pinned[tid] = true
			fresh++
		}
		if fresh == 0 {
			break
		}
	}
	// The kernel intersects the mask with the cgroup's cpuset: size
	// GOMAXPROCS by what the thread actually got. Setting it explicitly also
	// stops the runtime from adjusting it on its own later.
	n := cpus.Size()
	if eff, err := Affinity(0); err == nil && !eff.IsEmpty() {
		n = eff.Size()
	}
	runtime.GOMAXPROCS(n)
	return nil
}

// ThreadIDs lists the threads of the running process.
func ThreadIDs() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	return tids, nil
}

// Affinity returns the CPUs thread tid may run on (0: the calling thread).
func Affinity(tid int) (cpuset.CPUSet, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return cpuset.CPUSet{}, fmt.Errorf("get affinity of thread %d: %w", tid, err)
	}
	var cpus []int
	for c := 0; c < len(set)*bits.UintSize; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpuset.New(cpus...), nil
}

// mpolPreferred is MPOL_PREFERRED from <linux/mempolicy.h>.
const mpolPreferred = 1

// PreferMemory asks the kernel to allocate memory for the calling thread,
// and the threads it creates from now on, on node first (MPOL_PREFERRED).
// It is best effort: memory policy is per thread and Go schedules
// goroutines over many threads, so this mainly complements Pin, whose
// affinity already makes the kernel's default local-allocation policy
// place pages on the node. Containers often forbid the call: the error then
// wraps unix.ENOSYS or unix.EPERM (see IsUnsupported).
func PreferMemory(node int) error {
	if node < 0 {
		return fmt.Errorf("prefer memory: invalid node %d", node)
	}
	words := node/bits.UintSize + 1
	mask := make([]uint, words)
	mask[node/bits.UintSize] |= 1 << (uint(node) % bits.UintSize)
	// The kernel reads maxnode-1 bits of the mask.
	maxnode := uintptr(words*bits.UintSize + 1)
	_, _, errno := unix.Syscall(unix.SYS_SET_MEMPOLICY, mpolPreferred, uintptr(unsafe.Pointer(&mask[0])), maxnode)
	runtime.KeepAlive(mask)
	if errno != 0 {
		return fmt.Errorf("set_mempolicy(MPOL_PREFERRED, node %d): %w", node, errno)
	}
	return nil
}

// IsUnsupported reports whether err means the system does not allow or
// implement memory policies (ENOSYS, EPERM), which callers may ignore.
func IsUnsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}
