// Package numa reads the NUMA topology of a Linux host from sysfs and pins
// the running process to one node: every thread's CPU affinity, GOMAXPROCS,
// and (best effort) the preferred memory node.
//
//	topo, err := numa.Read("/sys")
//	if err != nil {
//		return err
//	}
//	node, ok := topo.Node(1)
//	if !ok {
//		return errors.New("no NUMA node 1")
//	}
//	if err := numa.Pin(node.CPUs); err != nil {
//		return err
//	}
//	_ = numa.PreferMemory(node.ID) // ENOSYS / EPERM in containers: not fatal
//
// A host without /sys/devices/system/node is reported as one pseudo-node 0
// holding every online CPU, so callers need no special case.
package numa
