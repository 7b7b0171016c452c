package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run calls Main and returns its exit status and outputs.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(t.Context(), args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      []string
		code     int
		out, err []string // what stdout and stderr contain
	}{
		{"help", []string{"help"}, nil, 0, []string{"usage: styx-node [serve]", "export-verdicts", "healthcheck"}, nil},
		{"serve help is the default", []string{"-h"}, nil, 0, nil, []string{"STYX_<FLAG>", "-etcd-endpoints", "-attack-token", "styx-node healthcheck"}},
		{"serve help", []string{"serve", "--help"}, nil, 0, nil, []string{"STYX_<FLAG>", "-threats-recent", "-nats-url", "nats://127.0.0.1:4222"}},
		{"lookup help", []string{"lookup", "-h"}, nil, 0, []string{"lookup"}, nil},
		{"import help", []string{"import-attacks", "-h"}, nil, 0, nil, []string{"Usage: styx-node import-attacks"}},
		{"export help", []string{"export-verdicts", "-h"}, nil, 0, []string{"export-verdicts"}, nil},
		{"unknown command", []string{"bogus"}, nil, 2, nil, []string{`unknown command "bogus"`, "usage: styx-node"}},
		{"unknown flag", []string{"--nope"}, nil, 2, nil, []string{"nope"}},
		{"positional argument", []string{"serve", "--http-addr=127.0.0.1:0", "extra"}, nil, 2, nil, []string{"unexpected arguments"}},
		{"bad log level", []string{"--log-level=loud"}, nil, 2, nil, []string{"log level"}},
		{"no identity", []string{"--http-addr=127.0.0.1:0"}, nil, 2, nil, []string{"no identity", "--pki-dir", "--insecure"}},
		{"bad duration from the environment", nil, []string{"STYX_LEASE_TTL", "soon"}, 2, nil, []string{"STYX_LEASE_TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < len(tt.env); i += 2 {
				t.Setenv(tt.env[i], tt.env[i+1])
			}
			code, stdout, stderr := run(t, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.out {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tt.err {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
		})
	}
}

// TestHealthcheck runs `styx-node healthcheck` against a server that
// answers /healthz, then against one that is gone.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	addr := srv.Listener.Addr().String()
	if code, _, stderr := run(t, "", "healthcheck", "--http-addr", addr); code != 0 {
		t.Fatalf("healthy node: exit %d: %s", code, stderr)
	}
	srv.Close()
	if code, _, _ := run(t, "", "healthcheck", "--http-addr", addr); code != 1 {
		t.Fatalf("no node: exit %d, want 1", code)
	}
}

func locationDB(t *testing.T) string {
	t.Helper()
	return locdbtest.WriteTemp(t, &locdbtest.Database{
		CreatedAt: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		Countries: []locdbtest.Country{{Code: "DE", Continent: "EU", Name: "Germany"}},
		ASes:      []locdbtest.AS{{Number: 64500, Name: "EXAMPLE"}},
		Networks:  []locdbtest.Network{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Country: "DE", ASN: 64500}},
	})
}

// logLines follows a JSON log written to the returned writer and sends the
// message of every line (with its http_addr, if any) until the writer is
// closed.
func logLines(t *testing.T) (io.WriteCloser, <-chan map[string]any) {
	t.Helper()
	r, w := io.Pipe()
	lines := make(chan map[string]any, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case lines <- m:
				default: // nobody reads that many; keep draining the log
				}
			}
		}
	}()
	return w, lines
}

func waitLog(t *testing.T, lines <-chan map[string]any, message string) map[string]any {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("log ended before %q", message)
			}
			if m["message"] == message {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q log line within 20s", message)
		}
	}
}

// TestServeAndSubcommands runs `styx-node serve` configured from the
// environment, following the verdict log, then the subcommands against it:
// healthcheck, lookup, import-attacks from stdin, and export-verdicts once
// it stopped.
func TestServeAndSubcommands(t *testing.T) {
	_, cli := etcdtest.Start(t)
	nats := natstest.Start(t)
	db := locationDB(t)
	dataDir := t.TempDir()
	const token = "cli-test-attack-token"
	for k, v := range map[string]string{
		"STYX_ID": "cli-node", "STYX_ETCD_ENDPOINTS": cli.Endpoints()[0], "STYX_HTTP_ADDR": "127.0.0.1:0",
		"STYX_DATA_DIR": dataDir, "STYX_DB": db, "STYX_SKIP_VERIFY": "true", "STYX_LEASE_TTL": "2s",
		"STYX_ATTACK_TOKEN": token, "STYX_FOLLOW_MODELS": "false", "STYX_NATS_URL": nats.URL(), "STYX_INSECURE": "true",
	} {
		t.Setenv(k, v)
	}
	logw, lines := logLines(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, nil, strings.NewReader(""), io.Discard, logw)
		logw.Close()
	}()
	addr, _ := waitLog(t, lines, "node serving")["http_addr"].(string)
	if addr == "" {
		t.Fatal("no http_addr in the serving log line")
	}
	waitLog(t, lines, "registered")
	resp, err := cli.Get(ctx, keyspace.NodeKey("cli-node"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("registration of cli-node (STYX_ID): %v %v", resp, err)
	}

	if code, _, stderr := run(t, "", "healthcheck", "--http-addr", addr); code != 0 {
		t.Fatalf("healthcheck: exit %d: %s", code, stderr)
	}
	// The node follows the log at STYX_NATS_URL (no streams yet: connected,
	// nothing to apply).
	testwait.For(t, testwait.Timeout, "log connected on /healthz", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct {
			Log struct{ Connected bool } `json:"log"`
		}
		return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Log.Connected
	})
	if code, stdout, stderr := run(t, "", "lookup", "--db", db, "--skip-verify", "192.0.2.1"); code != 0 || !strings.Contains(stdout, "EXAMPLE") {
		t.Fatalf("lookup: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdin := `{"address":"192.0.2.9","time":1735689600,"kind":"login"}` + "\n"
	code, stdout, stderr := run(t, stdin, "import-attacks", "--node", "http://"+addr, "--token", token, "-")
	if code != 0 || !strings.Contains(stdout, "imported 1 reports") {
		t.Fatalf("import-attacks from stdin: exit %d\n%s\n%s", code, stdout, stderr)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d after its context ended, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return within 20s of its context ending")
	}
	code, stdout, stderr = run(t, "", "export-verdicts", "--data-dir", dataDir)
	if code != 0 || !strings.HasPrefix(stdout, "address,label\n") {
		t.Fatalf("export-verdicts: exit %d\n%s\n%s", code, stdout, stderr)
	}
}
