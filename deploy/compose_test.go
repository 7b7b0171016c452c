package deploy_test

import (
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
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
}

var composeImage = regexp.MustCompile(`^styx-(etcd|nats|scheduler|worker|node):\$\{IMAGE_TAG:-dev\}$`)

// TestComposeFile checks deploy/compose without Docker: every image is a
// target of the Dockerfile built FROM scratch, ports are published on
// 127.0.0.1 only and on ports Docker picks, STYX_* variables are real,
// and schedulers, nodes, etcd and NATS have health checks that run their
// own binary. The NATS servers form one cluster that every STYX service
// names, and the schedulers keep a replica of the streams on each. With
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
		"etcd-1": "etcd", "etcd-2": "etcd", "etcd-3": "etcd",
		"nats-1": "nats", "nats-2": "nats", "nats-3": "nats",
		"scheduler-a": "scheduler", "scheduler-b": "scheduler",
		"worker": "worker", "node-a": "node", "node-b": "node",
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
		if r != "etcd" && r != "nats" {
			checkVars(t, file+": "+name, r, slices.Collect(maps.Keys(s.Environment)))
		}
		if r == "worker" {
			if s.Scale != 3 {
				t.Errorf("%s: worker scale %d, want 3", file, s.Scale)
			}
			continue
		}
		bin := "/usr/local/bin/styx-" + r
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[1] != bin || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("%s: %s: want healthcheck test [CMD, %s, healthcheck]", file, name, bin)
		}
	}

	checkComposeNATS(t, file, doc.Services)

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
		if args["--store_dir"] == "" || args["--cluster"] != "nats://0.0.0.0:6222" || args["--http_port"] != "8222" {
			t.Errorf("%s: %s: want --store_dir, --cluster=nats://0.0.0.0:6222 and --http_port=8222 (the health check's port), got %v", file, n, args)
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
		if r == nil || r[1] == "etcd" || r[1] == "nats" {
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
