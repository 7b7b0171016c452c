package deploy_test

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// composeService is the part of a compose service the checks read.
type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Scale       int               `json:"scale"`
	Profiles    []string          `json:"profiles"`
	User        string            `json:"user"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	// Volumes are "source:target[:ro]" or the long syntax.
	Volumes []json.RawMessage `json:"volumes"`
}

// composeMount is one volume of a service.
type composeMount struct {
	Source, Target string
	ReadOnly       bool
}

func (s composeService) mounts(t *testing.T, name string) []composeMount {
	t.Helper()
	var out []composeMount
	for _, raw := range s.Volumes {
		var short string
		if json.Unmarshal(raw, &short) == nil {
			parts := strings.Split(short, ":")
			if len(parts) < 2 || len(parts) > 3 {
				t.Errorf("%s: volume %q: want source:target[:ro]", name, short)
				continue
			}
			out = append(out, composeMount{parts[0], parts[1], len(parts) == 3 && parts[2] == "ro"})
			continue
		}
		var long struct {
			Source   string `json:"source"`
			Target   string `json:"target"`
			ReadOnly bool   `json:"read_only"`
		}
		if err := json.Unmarshal(raw, &long); err != nil {
			t.Errorf("%s: volume %s: %v", name, raw, err)
			continue
		}
		out = append(out, composeMount{long.Source, long.Target, long.ReadOnly})
	}
	return out
}

var composeImage = regexp.MustCompile(`^styx-(etcd|nats|scheduler|worker|node|pki):\$\{IMAGE_TAG:-dev\}$`)

// TestComposeFile checks deploy/compose without Docker: every image is a
// target of the Dockerfile built FROM scratch, ports are published on
// 127.0.0.1 only and on ports Docker picks, STYX_* variables are real,
// and schedulers, nodes, etcd and NATS have health checks that run their
// own binary. The NATS servers form one cluster that every STYX service
// names, and the schedulers keep a replica of the streams on each. Every
// service runs with an identity of its own (checkComposePKI). With
// docker-compose installed, `docker-compose config` must accept the file
// too.
func TestComposeFile(t *testing.T) {
	file := filepath.Join("compose", "docker-compose.yml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]composeService `json:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	want := map[string]string{
		"pki": "pki", "etcd-auth": "pki",
		"etcd-1": "etcd", "etcd-2": "etcd", "etcd-3": "etcd",
		"nats-1": "nats", "nats-2": "nats", "nats-3": "nats",
		"scheduler-a": "scheduler", "scheduler-b": "scheduler",
		"worker-1": "worker", "worker-2": "worker", "worker-3": "worker", "worker-4": "worker", "worker-5": "worker",
		"node-a": "node", "node-b": "node",
	}
	for name := range doc.Services {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: unexpected service %s", file, name)
		}
	}

	targets := dockerfileTargets(t, filepath.Join("compose", "Dockerfile"))
	for name, r := range want {
		s, ok := doc.Services[name]
		if !ok {
			t.Errorf("%s: no service %s", file, name)
			continue
		}
		m := composeImage.FindStringSubmatch(s.Image)
		if m == nil || m[1] != r {
			t.Errorf("%s: %s: image %q, want styx-%s:${IMAGE_TAG:-dev}", file, name, s.Image, r)
		}
		if !targets[r] {
			t.Errorf("compose/Dockerfile has no FROM scratch stage %q for %s", r, name)
		}
		for _, p := range s.Ports {
			if !regexp.MustCompile(`^127\.0\.0\.1::[0-9]+$`).MatchString(p) {
				t.Errorf("%s: %s: port %q: publish on 127.0.0.1 with a port Docker picks (127.0.0.1::PORT)", file, name, p)
			}
		}
		if r != "etcd" && r != "nats" && r != "pki" {
			checkVars(t, file+": "+name, r, slices.Collect(maps.Keys(s.Environment)))
		}
		if s.Scale != 0 {
			t.Errorf("%s: %s: scale %d: a replica would share its identity; give each host a service", file, name, s.Scale)
		}
		extra := name == "worker-4" || name == "worker-5"
		if got := slices.Equal(s.Profiles, []string{"scale"}); got != extra {
			t.Errorf("%s: %s: profiles %v; want the profile scale for worker-4 and worker-5 only", file, name, s.Profiles)
		}
		if r == "worker" || r == "pki" {
			continue
		}
		bin := "/usr/local/bin/styx-" + r
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[1] != bin || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("%s: %s: want healthcheck test [CMD, %s, healthcheck]", file, name, bin)
		}
	}

	checkComposeNATS(t, file, doc.Services)
	checkComposePKI(t, file, doc.Services)

	if dc, err := exec.LookPath("docker-compose"); err == nil {
		cmd := exec.Command(dc, "-f", file, "config", "-q")
		cmd.Env = append(os.Environ(), "IMAGE_TAG=check")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose config: %v\n%s", err, out)
		}
	}
}

// checkComposeNATS checks the verdict log's servers: each has a name, a
// store in its own volume, the same cluster name and routes to every
// server; every STYX service's STYX_NATS_URL names all of them; and the
// schedulers ask for as many stream replicas as there are servers.
func checkComposeNATS(t *testing.T, file string, services map[string]composeService) {
	t.Helper()
	var servers []string
	for name, s := range services {
		if strings.HasPrefix(s.Image, "styx-nats:") {
			servers = append(servers, name)
		}
	}
	slices.Sort(servers)
	if len(servers) != 3 {
		t.Fatalf("%s: NATS servers %v, want three", file, servers)
	}
	var routes, urls []string
	for _, n := range servers {
		routes = append(routes, "nats://"+n+":6222")
		urls = append(urls, "nats://"+n+":4222")
	}
	clusters := map[string]bool{}
	for _, n := range servers {
		args := map[string]string{}
		for _, a := range services[n].Command {
			k, v, ok := strings.Cut(a, "=")
			if !ok || !strings.HasPrefix(k, "--") {
				t.Errorf("%s: %s: command argument %q: write --flag=value", file, n, a)
				continue
			}
			args[k] = v
		}
		if args["--name"] != n {
			t.Errorf("%s: %s: --name=%q, want its service name", file, n, args["--name"])
		}
		if args["--store_dir"] == "" || args["--cluster"] != "nats://0.0.0.0:6222" || args["--https_port"] != "8222" {
			t.Errorf("%s: %s: want --store_dir, --cluster=nats://0.0.0.0:6222 and --https_port=8222 (the health check's port), got %v", file, n, args)
		}
		clusters[args["--cluster_name"]] = true
		if got := strings.Split(args["--routes"], ","); !slices.Equal(got, routes) {
			t.Errorf("%s: %s: --routes=%s, want %s", file, n, args["--routes"], strings.Join(routes, ","))
		}
	}
	if len(clusters) != 1 || clusters[""] {
		t.Errorf("%s: NATS cluster names %v, want one, the same on every server", file, slices.Collect(maps.Keys(clusters)))
	}
	for name, s := range services {
		r := composeImage.FindStringSubmatch(s.Image)
		if r == nil || r[1] == "etcd" || r[1] == "nats" || r[1] == "pki" {
			continue
		}
		if got := strings.Split(s.Environment["STYX_NATS_URL"], ","); !slices.Equal(got, urls) {
			t.Errorf("%s: %s: STYX_NATS_URL=%q, want %s", file, name, s.Environment["STYX_NATS_URL"], strings.Join(urls, ","))
		}
		if r[1] == "scheduler" && s.Environment["STYX_LOG_REPLICAS"] != strconv.Itoa(len(servers)) {
			t.Errorf("%s: %s: STYX_LOG_REPLICAS=%q, want %d (a replica on each NATS server)", file, name, s.Environment["STYX_LOG_REPLICAS"], len(servers))
		}
	}
}

// dockerfileTargets returns the stage names of a Dockerfile, failing the
// test for any stage not built FROM scratch.
func dockerfileTargets(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		if len(f) != 4 || f[1] != "scratch" || !strings.EqualFold(f[2], "AS") {
			t.Errorf("%s: %q: every stage must be FROM scratch AS <role>", path, strings.TrimSpace(line))
			continue
		}
		out[f[3]] = true
	}
	return out
}

// checkComposePKI checks the stack's trust. The one-shot service pki issues
// (styx-pki ensure) one identity per service, each into a volume of its
// own, and keeps the CA in a volume no other service mounts. Every other
// service mounts exactly one identity volume, read-only, at its
// STYX_PKI_DIR; holds the identity its role and name call for (a worker's
// and a node's id is the one they register, an etcd member's its member
// name, a NATS server's its server name); and starts after pki. etcd
// speaks only https. etcd-auth, as the admin, grants every identity that
// uses etcd before authentication goes on and before any STYX service
// starts. The ensure command then runs for real, with styx-pki built from
// this tree, into a temporary directory.
func checkComposePKI(t *testing.T, file string, services map[string]composeService) {
	t.Helper()
	ps, ok := services["pki"]
	if !ok || len(ps.Command) == 0 || ps.Command[0] != "ensure" {
		t.Errorf("%s: pki: want a service pki running styx-pki ensure, got %v", file, ps.Command)
		return
	}
	flags := map[string]string{}
	var ids []string
	for _, a := range ps.Command[1:] {
		if strings.HasPrefix(a, "--") {
			k, v, _ := strings.Cut(a, "=")
			flags[k] = v
			continue
		}
		ids = append(ids, a)
	}
	root := flags["--dir"]
	if _, ok := flags["--dns-id"]; !ok || root == "" || flags["--owner"] != "65534:65534" || ps.User != "0:0" {
		t.Errorf("%s: pki: want --dir, --dns-id (etcd members check host names) and --owner=65534:65534 (the images' user), run as user 0:0; got %v, user %q",
			file, ps.Command, ps.User)
	}
	identityOf := map[string]string{} // volume -> ROLE/ID
	volumeOf := map[string]string{}   // ROLE/ID -> volume
	caVolume := ""
	for _, m := range ps.mounts(t, "pki") {
		rel, ok := strings.CutPrefix(m.Target, root+"/")
		switch {
		case !ok:
			t.Errorf("%s: pki: volume %s at %s, outside --dir %s", file, m.Source, m.Target, root)
		case rel == "ca":
			caVolume = m.Source
		default:
			role, id, _ := strings.Cut(rel, "-") // <role>-<id>: no role holds a '-'
			ident := role + "/" + id
			if !slices.Contains(ids, ident) {
				t.Errorf("%s: pki: volume %s holds %s, which pki does not issue", file, m.Source, ident)
			}
			identityOf[m.Source], volumeOf[ident] = ident, m.Source
		}
	}
	if caVolume == "" {
		t.Errorf("%s: pki: no volume for the CA (%s/ca)", file, root)
	}
	for _, id := range ids {
		if volumeOf[id] == "" {
			t.Errorf("%s: pki issues %s into no volume: the identity would be lost", file, id)
		}
	}

	var etcdMembers []string
	for name, s := range services {
		if strings.HasPrefix(s.Image, "styx-etcd:") {
			etcdMembers = append(etcdMembers, name)
		}
	}
	slices.Sort(etcdMembers)
	var endpoints []string
	for _, m := range etcdMembers {
		endpoints = append(endpoints, m+":2379")
	}

	holder := map[string]string{} // volume -> service
	for name, s := range services {
		if name == "pki" {
			continue
		}
		where := file + ": " + name
		var mounts []composeMount
		for _, m := range s.mounts(t, name) {
			if m.Source == caVolume {
				t.Errorf("%s: mounts the CA's volume %s: only pki may hold the CA's key", where, m.Source)
			}
			if identityOf[m.Source] != "" {
				mounts = append(mounts, m)
			}
		}
		if len(mounts) != 1 {
			t.Errorf("%s: mounts %d identity volumes, want its own, one", where, len(mounts))
			continue
		}
		m := mounts[0]
		if !m.ReadOnly || s.Environment["STYX_PKI_DIR"] != m.Target {
			t.Errorf("%s: identity volume %s at %s (read-only %v), STYX_PKI_DIR=%q: want it read-only at STYX_PKI_DIR", where, m.Source, m.Target, m.ReadOnly, s.Environment["STYX_PKI_DIR"])
		}
		if _, ok := s.Environment["STYX_INSECURE"]; ok || slices.Contains(s.Command, "--insecure") {
			t.Errorf("%s: --insecure: every service runs with its identity", where)
		}
		if other, ok := holder[m.Source]; ok {
			t.Errorf("%s: shares the identity volume %s with %s", where, m.Source, other)
		}
		holder[m.Source] = name
		ident := identityOf[m.Source]
		role, id, _ := strings.Cut(ident, "/")
		r := composeImage.FindStringSubmatch(s.Image)
		if r == nil {
			continue
		}
		want := ""
		switch {
		case name == "etcd-auth":
			if role != "admin" {
				t.Errorf("%s: runs as %s: etcd users are an admin's to manage", where, ident)
			}
		case r[1] == "etcd":
			want = "etcd/" + s.Environment["ETCD_NAME"]
			if s.Environment["ETCD_NAME"] != name {
				t.Errorf("%s: ETCD_NAME=%q, want its service name (its host name, which its peers check)", where, s.Environment["ETCD_NAME"])
			}
			for _, k := range []string{"ETCD_LISTEN_CLIENT_URLS", "ETCD_ADVERTISE_CLIENT_URLS", "ETCD_LISTEN_PEER_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER"} {
				for _, u := range strings.Split(s.Environment[k], ",") {
					if _, url, _ := strings.Cut(u, "="); !strings.HasPrefix(url, "https://") && !strings.HasPrefix(u, "https://") {
						t.Errorf("%s: %s=%s: etcd speaks TLS only", where, k, s.Environment[k])
					}
				}
			}
		case r[1] == "nats":
			for _, a := range s.Command {
				if v, ok := strings.CutPrefix(a, "--name="); ok {
					want = "nats/" + v
				}
			}
		case r[1] == "scheduler":
			want = "scheduler/" + id
		case r[1] == "worker":
			// The certificate names the worker: its id is the one it
			// registers, which the leader checks on every connection.
			want = "worker/" + name
			if v, ok := s.Environment["STYX_ID"]; ok && v != name {
				t.Errorf("%s: STYX_ID=%q, want none or %s (its certificate's id)", where, v, name)
			}
		case r[1] == "node":
			want = "node/" + s.Environment["STYX_ID"]
		}
		if want != "" && ident != want {
			t.Errorf("%s: holds the identity %s, want %s", where, ident, want)
		}
		if !dependsOn(services, name, "pki", "service_completed_successfully") {
			t.Errorf("%s: does not wait for pki to complete", where)
		}
		switch r[1] {
		case "scheduler", "worker", "node":
			if !dependsOn(services, name, "etcd-auth", "service_completed_successfully") {
				t.Errorf("%s: does not wait for etcd-auth: its etcd user may not exist yet", where)
			}
			fallthrough
		case "pki":
			if got := strings.Split(s.Environment["STYX_ETCD_ENDPOINTS"], ","); !slices.Equal(got, endpoints) && name != "pki" {
				t.Errorf("%s: STYX_ETCD_ENDPOINTS=%q, want %s", where, s.Environment["STYX_ETCD_ENDPOINTS"], strings.Join(endpoints, ","))
			}
		}
	}

	auth := services["etcd-auth"]
	if len(auth.Command) == 0 || auth.Command[0] != "etcd-enable" {
		t.Errorf("%s: etcd-auth: want styx-pki etcd-enable, got %v", file, auth.Command)
		return
	}
	granted := map[string]bool{}
	for _, a := range auth.Command[1:] {
		if v, ok := strings.CutPrefix(a, "--admin="); ok {
			for _, adm := range strings.Split(v, ",") {
				granted["admin/"+adm] = true
			}
		} else if !strings.HasPrefix(a, "-") {
			granted[a] = true
		}
	}
	for _, id := range ids {
		role, _, _ := strings.Cut(id, "/")
		uses := role != "etcd" && role != "nats" // etcd and NATS servers are no etcd users
		if uses != granted[id] {
			t.Errorf("%s: etcd-auth grants %s: %v, want %v", file, id, granted[id], uses)
		}
	}
	for _, m := range etcdMembers {
		if auth.DependsOn[m].Condition != "service_healthy" {
			t.Errorf("%s: etcd-auth does not wait for %s to be healthy", file, m)
		}
	}

	// The ensure command, for real: every identity directory, with its id
	// as a DNS name; again, it keeps them all.
	bin := filepath.Join(t.TempDir(), "styx-pki")
	build := exec.Command("go", "build", "-o", bin, "github.com/styx-inference/styx/deploy/pki/cmd/styx-pki")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build styx-pki: %v\n%s", err, out)
	}
	dir := t.TempDir()
	args := []string{"ensure", "--dir=" + dir}
	for _, a := range ps.Command[1:] {
		if !strings.HasPrefix(a, "--dir=") && !strings.HasPrefix(a, "--owner=") {
			args = append(args, a)
		}
	}
	for round := range 2 {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("styx-pki %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if round == 1 && strings.Count(string(out), "kept ") != len(ids) {
			t.Errorf("styx-pki ensure run again did not keep every identity:\n%s", out)
		}
	}
	for _, ident := range ids {
		role, id, _ := strings.Cut(ident, "/")
		d := filepath.Join(dir, role+"-"+id)
		out, err := exec.Command(bin, "show", d).CombinedOutput()
		switch {
		case err != nil:
			t.Errorf("styx-pki show %s: %v\n%s", d, err, out)
		case !strings.Contains(string(out), "DNS:"+id):
			t.Errorf("styx-pki show %s: no DNS name %s (--dns-id)", d, id)
		}
	}
}

// dependsOn reports whether service waits, directly or through the
// services it waits for, for target with condition (on its last edge).
func dependsOn(services map[string]composeService, service, target, condition string) bool {
	seen := map[string]bool{}
	next := []string{service}
	for len(next) > 0 {
		s := next[0]
		next = next[1:]
		if seen[s] {
			continue
		}
		seen[s] = true
		for dep, d := range services[s].DependsOn {
			if dep == target && d.Condition == condition {
				return true
			}
			next = append(next, dep)
		}
	}
	return false
}
