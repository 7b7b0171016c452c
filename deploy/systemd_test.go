package deploy_test

import (
	"bufio"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

const systemdDir = "systemd"

// unit is a parsed unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case section == "":
			t.Errorf("%s:%d: setting outside a section", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s:%d: not key=value: %q", path, n, line)
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestSystemdUnits checks the units' structure, their STYX_* variables
// against the binaries, and, when systemd-analyze is installed, has systemd
// verify them (with stand-in executables at the ExecStart paths).
func TestSystemdUnits(t *testing.T) {
	units := map[string]struct {
		role, exec string
	}{
		"styx-scheduler.service": {"scheduler", "/usr/local/bin/styx-scheduler serve"},
		"styx-node.service":      {"node", "/usr/local/bin/styx-node serve"},
		"styx-worker@.service":   {"worker", "/usr/local/bin/styx-worker --numa-node %i"},
		"styx-nats.service":      {"nats", "/usr/local/bin/styx-nats -c /etc/styx/nats.conf"},
	}
	files, _ := filepath.Glob(filepath.Join(systemdDir, "*.service"))
	if len(files) != len(units) {
		t.Errorf("%d unit files in %s, want %d", len(files), systemdDir, len(units))
	}
	hardening := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "DynamicUser": "yes", "CapabilityBoundingSet": "", "RestrictNamespaces": "yes",
		"MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native", "LockPersonality": "yes",
	}
	for name, want := range units {
		path := filepath.Join(systemdDir, name)
		u := parseUnit(t, path)
		if got := u.get("Service", "ExecStart"); got != want.exec {
			t.Errorf("%s: ExecStart=%q, want %q", name, got, want.exec)
		}
		if got := u.get("Service", "Restart"); got != "on-failure" {
			t.Errorf("%s: Restart=%q, want on-failure", name, got)
		}
		if len(u["Service"]["EnvironmentFile"]) == 0 {
			t.Errorf("%s: no EnvironmentFile for the STYX_* settings", name)
		}
		for k, v := range hardening {
			if _, ok := u["Service"][k]; !ok || u.get("Service", k) != v {
				t.Errorf("%s: want %s=%s", name, k, v)
			}
		}
		if u.get("Install", "WantedBy") != "multi-user.target" {
			t.Errorf("%s: want WantedBy=multi-user.target", name)
		}
		var vars []string
		for _, line := range u["Service"]["Environment"] {
			for _, kv := range strings.Fields(line) {
				k, _, _ := strings.Cut(kv, "=")
				vars = append(vars, k)
			}
		}
		if want.role == "nats" {
			checkNATSConf(t, filepath.Join(systemdDir, "nats.conf"), u.get("Service", "StateDirectory"))
			checkCredentials(t, name, u, "nats")
			continue
		}
		checkVars(t, path, want.role, vars)
		checkCredentials(t, name, u, want.role)
	}

	// The example environment file holds only settings every role has.
	envFile := filepath.Join(systemdDir, "styx.env")
	envVars := envFileVars(t, envFile)
	if slices.Contains(envVars, "STYX_INSECURE") {
		t.Errorf("%s: STYX_INSECURE: the units run with identities", envFile)
	}
	for _, r := range []string{"scheduler", "worker", "node"} {
		checkVars(t, envFile, r, envVars)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: structural checks only")
		return
	}
	// systemd-analyze verify wants the ExecStart executables to exist: copy
	// the units with their paths pointing at stand-ins, and instantiate the
	// worker template for NUMA nodes 0 and 1.
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var args []string
	for name := range units {
		b, err := os.ReadFile(filepath.Join(systemdDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(string(b), "/usr/local/bin/", bin+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "@.service") {
			for _, i := range []string{"0", "1"} {
				inst := strings.Replace(name, "@", "@"+i, 1)
				if err := os.Symlink(name, filepath.Join(dir, inst)); err != nil {
					t.Fatal(err)
				}
				args = append(args, filepath.Join(dir, inst))
			}
		} else {
			args = append(args, filepath.Join(dir, name))
		}
	}
	for _, b := range []string{"styx-scheduler", "styx-node", "styx-worker", "styx-nats"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// checkNATSConf checks the example configuration of styx-nats.service with
// nats-server's own parser: JetStream stores in the unit's StateDirectory,
// and the server is one of a cluster of three, with monitoring on over
// HTTPS (the healthcheck's port) and no TLS or authorization of its own.
func checkNATSConf(t *testing.T, path, stateDir string) {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if !opts.JetStream || opts.StoreDir != "/var/lib/"+stateDir {
		t.Errorf("%s: jetstream %v, store_dir %q; want JetStream in /var/lib/%s (the unit's StateDirectory)", path, opts.JetStream, opts.StoreDir, stateDir)
	}
	if opts.ServerName == "" || opts.Cluster.Name == "" || opts.Cluster.Port == 0 || len(opts.Routes) != 3 {
		t.Errorf("%s: server_name %q, cluster %q on port %d with %d routes; want a named server in a named cluster of three",
			path, opts.ServerName, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
	}
	if opts.HTTPSPort != 8222 || opts.HTTPPort != 0 {
		t.Errorf("%s: monitoring on HTTPS port %d and HTTP port %d, want HTTPS only on 8222 (styx-nats healthcheck's default; with an identity, styx-nats refuses plain HTTP)", path, opts.HTTPSPort, opts.HTTPPort)
	}
	if opts.TLSConfig != nil || opts.Cluster.TLSConfig != nil || opts.Authorization != "" || len(opts.Users) > 0 {
		t.Errorf("%s: TLS or authorization set in the file: styx-nats sets both from its identity, and refuses others", path)
	}
}

// envFileVars returns the variables an environment file sets, including
// the ones commented out as examples ("#STYX_X=...").
func envFileVars(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if k, _, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "STYX_") && !strings.ContainsAny(k, " \t") {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		t.Errorf("%s sets no STYX_* variable", path)
	}
	return out
}

// checkCredentials checks that a unit hands its process its identity:
// ca.crt, tls.crt and tls.key loaded as credentials from
// /etc/styx/pki/<dir>/ (readable by root only is enough: systemd copies
// them for the dynamic user), STYX_PKI_DIR set to the credentials
// directory (%d), and no STYX_INSECURE.
func checkCredentials(t *testing.T, name string, u unit, dir string) {
	t.Helper()
	got := map[string]string{}
	for _, v := range u["Service"]["LoadCredential"] {
		id, path, ok := strings.Cut(v, ":")
		if !ok {
			t.Errorf("%s: LoadCredential=%s: want ID:PATH", name, v)
			continue
		}
		got[id] = path
	}
	want := map[string]string{}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		want[f] = "/etc/styx/pki/" + dir + "/" + f
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s: credentials %v, want %v", name, got, want)
	}
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	if env["STYX_PKI_DIR"] != "%d" {
		t.Errorf("%s: STYX_PKI_DIR=%q, want %%d (the credentials directory)", name, env["STYX_PKI_DIR"])
	}
	if _, ok := env["STYX_INSECURE"]; ok {
		t.Errorf("%s: STYX_INSECURE: the units run with identities", name)
	}
}
