package numa

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/utils/cpuset"
)

// Node is one NUMA node and the CPUs it holds.
type Node struct {
	ID   int
	CPUs cpuset.CPUSet
}

// Topology is the set of NUMA nodes of a host, sorted by node id.
type Topology struct {
	Nodes []Node
	// Pseudo is true when the host exposes no NUMA information and Nodes is
	// the single pseudo-node 0 built from the online CPUs.
	Pseudo bool
}

// Node returns the node with the given id.
func (t Topology) Node(id int) (Node, bool) {
	for _, n := range t.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// CPUs returns the union of every node's CPUs.
func (t Topology) CPUs() cpuset.CPUSet {
	all := cpuset.New()
	for _, n := range t.Nodes {
		all = all.Union(n.CPUs)
	}
	return all
}

// Relative paths under the sysfs root.
const (
	nodeDir   = "devices/system/node"
	cpuOnline = "devices/system/cpu/online"
)

// Read returns the topology described under sysfsRoot (normally "/sys"):
// one Node per <root>/devices/system/node/node<N>/cpulist, sorted by N.
// Nodes without CPUs (memory-only nodes) are left out. When the node
// directory does not exist, the topology is one pseudo-node 0 holding the
// CPUs listed in <root>/devices/system/cpu/online.
func Read(sysfsRoot string) (Topology, error) {
	dir := filepath.Join(sysfsRoot, nodeDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return readPseudo(sysfsRoot)
	}
	if err != nil {
		return Topology{}, fmt.Errorf("read numa nodes: %w", err)
	}
	var t Topology
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "node") {
			continue
		}
		id, err := strconv.Atoi(name[len("node"):])
		if err != nil || id < 0 {
			continue // e.g. "node_foo"; not a node directory
		}
		cpus, err := readCPUList(filepath.Join(dir, name, "cpulist"))
		if err != nil {
			return Topology{}, fmt.Errorf("numa node %d: %w", id, err)
		}
		if cpus.IsEmpty() {
			continue
		}
		t.Nodes = append(t.Nodes, Node{ID: id, CPUs: cpus})
	}
	if len(t.Nodes) == 0 {
		return readPseudo(sysfsRoot)
	}
	slices.SortFunc(t.Nodes, func(a, b Node) int { return a.ID - b.ID })
	return t, nil
}

func readPseudo(sysfsRoot string) (Topology, error) {
	cpus, err := readCPUList(filepath.Join(sysfsRoot, cpuOnline))
	if err != nil {
		return Topology{}, fmt.Errorf("online cpus: %w", err)
	}
	if cpus.IsEmpty() {
		return Topology{}, fmt.Errorf("online cpus: empty list in %s", filepath.Join(sysfsRoot, cpuOnline))
	}
	return Topology{Nodes: []Node{{ID: 0, CPUs: cpus}}, Pseudo: true}, nil
}

func readCPUList(path string) (cpuset.CPUSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cpuset.CPUSet{}, err
	}
	s, err := cpuset.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return cpuset.CPUSet{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return s, nil
}
