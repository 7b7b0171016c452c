package numa

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fakeSysfs writes a sysfs tree under a temporary root: files maps a path
// relative to the root to its content.
func fakeSysfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestRead(t *testing.T) {
	const online = "devices/system/cpu/online"
	node := func(n string) string { return "devices/system/node/" + n + "/cpulist" }
	type want struct {
		ID   int
		CPUs string
	}
	tests := []struct {
		name    string
		files   map[string]string
		want    []want
		pseudo  bool
		wantErr bool
	}{
		{
			name:  "one node",
			files: map[string]string{online: "0-3\n", node("node0"): "0-3\n"},
			want:  []want{{0, "0-3"}},
		},
		{
			name: "two nodes interleaved",
			files: map[string]string{
				online:                       "0-7\n",
				node("node0"):                "0-1,4-5\n",
				node("node1"):                "2-3,6-7\n",
				"devices/system/node/online": "0-1\n", // not a node dir
			},
			want: []want{{0, "0-1,4-5"}, {1, "2-3,6-7"}},
		},
		{
			name: "four nodes sorted numerically",
			files: map[string]string{
				node("node10"): "12-15\n",
				node("node2"):  "8-11\n",
				node("node1"):  "4-7\n",
				node("node0"):  "0-3\n",
			},
			want: []want{{0, "0-3"}, {1, "4-7"}, {2, "8-11"}, {10, "12-15"}},
		},
		{
			name: "memory-only node left out",
			files: map[string]string{
				node("node0"): "0-3\n",
				node("node1"): "\n",
			},
			want: []want{{0, "0-3"}},
		},
		{
			name:   "no node directory",
			files:  map[string]string{online: "0-5\n"},
			want:   []want{{0, "0-5"}},
			pseudo: true,
		},
		{
			name:    "no node directory and no online list",
			files:   map[string]string{"devices/system/cpu/possible": "0-1\n"},
			wantErr: true,
		},
		{
			name:    "malformed cpulist",
			files:   map[string]string{node("node0"): "0-x\n"},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, err := Read(fakeSysfs(t, tt.files))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Read: got %+v, want an error", topo)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			var got []want
			for _, n := range topo.Nodes {
				got = append(got, want{n.ID, n.CPUs.String()})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("nodes = %v, want %v", got, tt.want)
			}
			if topo.Pseudo != tt.pseudo {
				t.Errorf("Pseudo = %v, want %v", topo.Pseudo, tt.pseudo)
			}
		})
	}
}

func TestTopologyLookups(t *testing.T) {
	topo, err := Read(fakeSysfs(t, map[string]string{
		"devices/system/node/node0/cpulist": "0-1",
		"devices/system/node/node1/cpulist": "2-3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := topo.Node(1); !ok || n.CPUs.String() != "2-3" {
		t.Errorf("Node(1) = %v, %v", n, ok)
	}
	if _, ok := topo.Node(2); ok {
		t.Error("Node(2) found on a two-node host")
	}
	if got := topo.CPUs().String(); got != "0-3" {
		t.Errorf("CPUs() = %s, want 0-3", got)
	}
}

func TestReadHost(t *testing.T) {
	if _, err := os.Stat("/sys/devices/system/cpu/online"); err != nil {
		t.Skip("no sysfs")
	}
	topo, err := Read("/sys")
	if err != nil {
		t.Fatalf("Read(/sys): %v", err)
	}
	if len(topo.Nodes) == 0 || topo.CPUs().IsEmpty() {
		t.Fatalf("host topology is empty: %+v", topo)
	}
}
