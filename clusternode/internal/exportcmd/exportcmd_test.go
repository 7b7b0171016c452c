package exportcmd

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/clusternode/internal/store"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newStore writes a node store under a new data directory and returns the
// directory.
func newStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(store.Config{Path: filepath.Join(dir, clusternode.StoreFile)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	v := func(proxy bool, typ string, evidence ...string) *styxv1.Verdict {
		return &styxv1.Verdict{Proxy: proxy, Type: typ, Risk: 50, Evidence: evidence, InferredUnixNano: time.Unix(1_700_000_000, 0).UnixNano()}
	}
	items := []store.Item{
		{Addr: netip.MustParseAddr("203.0.113.9"), Verdict: v(true, "SOCKS5", "locdb:hosting", "proxyprobe:SOCKS5:1080")},
		{Addr: netip.MustParseAddr("192.0.2.1"), Verdict: v(false, "")},
		{Addr: netip.MustParseAddr("192.0.2.2"), Verdict: v(true, "VPN", "locdb:anonymous-proxy")},
		{Addr: netip.MustParseAddr("198.51.100.3"), Verdict: v(true, "Hostile", "locdb:drop")},
		{Addr: netip.MustParseAddr("2001:db8::8"), Verdict: v(true, "HTTP", "proxyprobe:HTTP:8080")},
	}
	if _, err := s.Put(items); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

var labelNames = map[string]bool{LabelAnonymiser: true, LabelHostile: true, LabelClean: true}

// checkLabelsFormat checks out against the format trainer/internal/labels
// parses (that package is internal to trainer/): the header it skips, then
// "address,label" lines with a plain address and a label it knows.
func checkLabelsFormat(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "address,label" {
		t.Fatalf("header %q", lines[0])
	}
	for i, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != 2 {
			t.Fatalf("line %d %q: %d fields", i+2, l, len(f))
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("line %d %q: address %v, %v", i+2, l, a, err)
		}
		if !labelNames[f[1]] {
			t.Fatalf("line %d %q: unknown label", i+2, l)
		}
	}
}

func TestExportAll(t *testing.T) {
	dir := newStore(t)
	code, out, errOut := run(t, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "address,label\n" +
		"192.0.2.1,clean\n" +
		"192.0.2.2,anonymiser\n" +
		"198.51.100.3,hostile\n" +
		"203.0.113.9,anonymiser\n" +
		"2001:db8::8,anonymiser\n"
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
	checkLabelsFormat(t, out)
	if !strings.Contains(errOut, "wrote 5 labels (verdicts of 5 stored) to standard output") {
		t.Fatalf("stderr %q lacks the count", errOut)
	}
}

func TestExportProbeConfirmedToFile(t *testing.T) {
	dir := newStore(t)
	outDir := t.TempDir()
	path := filepath.Join(outDir, "probe.csv")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, errOut := run(t, "--probe-confirmed", "--out", path, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if stdout != "" {
		t.Fatalf("stdout %q with --out FILE", stdout)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "address,label\n203.0.113.9,anonymiser\n2001:db8::8,anonymiser\n"
	if string(b) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", b, want)
	}
	checkLabelsFormat(t, string(b))
	if !strings.Contains(errOut, "wrote 2 labels (probe-confirmed verdicts of 5 stored) to "+path) {
		t.Fatalf("stderr %q lacks the count", errOut)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Fatalf("output directory holds %d files, want 1 (temporary file left?)", len(ents))
	}
}

func TestExportEnvDataDir(t *testing.T) {
	dir := newStore(t)
	t.Setenv(EnvDataDir, dir)
	code, out, errOut := run(t, "--probe-confirmed")
	if code != 0 || !strings.Contains(out, "203.0.113.9,anonymiser") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestExportStoreInUse(t *testing.T) {
	defer func(d time.Duration) { openTimeout = d }(openTimeout)
	openTimeout = 50 * time.Millisecond
	dir := newStore(t)
	s, err := store.Open(store.Config{Path: filepath.Join(dir, clusternode.StoreFile)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := filepath.Join(t.TempDir(), "probe.csv")
	code, out, errOut := run(t, "--data-dir", dir, "--out", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if out != "" || !strings.Contains(errOut, "store is in use by a running node; stop it or copy the file") {
		t.Fatalf("out %q, err %q", out, errOut)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("output file exists after the failure: %v", err)
	}
}

func TestExportErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing store", []string{"--data-dir", t.TempDir()}, 1, "styx-node.db"},
		{"extra argument", []string{"x"}, 2, "unexpected arguments"},
		{"unknown flag", []string{"--nope"}, 2, "--help"},
		{"empty out", []string{"--out", ""}, 2, "--out must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	code, out, _ := run(t, "-h")
	if code != 0 || !strings.Contains(out, "Usage: styx-node export-verdicts") {
		t.Fatalf("-h: exit %d, out %q", code, out)
	}
}

func TestExportEmptyWarns(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(store.Config{Path: filepath.Join(dir, clusternode.StoreFile)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "--data-dir", dir, "--probe-confirmed")
	if code != 0 || out != "address,label\n" || !strings.Contains(errOut, "warning: no labelled line") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
}
