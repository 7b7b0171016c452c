package pkiflag_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/pkiflag"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parse registers the flags on a new flag set and parses args.
func parse(t *testing.T, args ...string) pkiflag.Flags {
	t.Helper()
	var f pkiflag.Flags
	fs := flag.NewFlagSet("styx-test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// load runs f.Load and returns what it logged as well.
func load(t *testing.T, f pkiflag.Flags) (*pki.Source, string, error) {
	t.Helper()
	var buf bytes.Buffer
	src, err := f.Load(zerolog.New(&buf))
	return src, buf.String(), err
}

func TestRegister(t *testing.T) {
	var f pkiflag.Flags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f.Register(fs)
	for _, name := range []string{"pki-dir", "insecure"} {
		fl := fs.Lookup(name)
		if fl == nil {
			t.Fatalf("no --%s", name)
		}
		if fl.Usage == "" {
			t.Errorf("--%s has no usage", name)
		}
	}
	if fs.Lookup("pki-dir").DefValue != "" || fs.Lookup("insecure").DefValue != "false" {
		t.Error("the flags do not default to nothing")
	}
	got := parse(t, "--pki-dir", "/etc/styx/pki", "--insecure")
	if got.Dir != "/etc/styx/pki" || !got.Insecure {
		t.Errorf("parsed %+v", got)
	}
	if got := parse(t); got != (pkiflag.Flags{}) {
		t.Errorf("no flags parsed as %+v", got)
	}
}

func TestNeither(t *testing.T) {
	src, log, err := load(t, parse(t))
	if !errors.Is(err, pkiflag.ErrNoIdentity) || src != nil {
		t.Fatalf("Load = %v, %v; want ErrNoIdentity", src, err)
	}
	for _, s := range []string{"--pki-dir", "--insecure", "ca.crt", "tls.crt", "tls.key"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error %q does not mention %s", err, s)
		}
	}
	if log != "" {
		t.Errorf("logged %q", log)
	}
}

func TestBoth(t *testing.T) {
	p := pkitest.New(t)
	src, _, err := load(t, parse(t, "--pki-dir", p.Dir(t, pki.Worker, "w1"), "--insecure"))
	if err == nil || src != nil || errors.Is(err, pkiflag.ErrNoIdentity) {
		t.Fatalf("Load = %v, %v; want a refusal of both", src, err)
	}
	if !strings.Contains(err.Error(), "both") {
		t.Errorf("error %q", err)
	}
}

func TestInsecure(t *testing.T) {
	src, log, err := load(t, parse(t, "--insecure"))
	if err != nil || src != nil {
		t.Fatalf("Load = %v, %v; want plaintext (nil)", src, err)
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"level":"warn"`) || !strings.Contains(lines[0], "plaintext") {
		t.Errorf("want one warning about plaintext, logged %q", log)
	}
}

func TestPKIDir(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Node, "n1")
	src, log, err := load(t, parse(t, "--pki-dir", dir))
	if err != nil {
		t.Fatal(err)
	}
	if src.Identity() != (pki.Identity{Role: pki.Node, ID: "n1"}) || src.Dir() != dir {
		t.Errorf("loaded %v from %s", src.Identity(), src.Dir())
	}
	if !strings.Contains(log, `"level":"info"`) || !strings.Contains(log, "spiffe://styx/node/n1") || strings.Contains(log, `"level":"warn"`) {
		t.Errorf("logged %q", log)
	}
	// A directory that does not load is an error, not plaintext.
	for name, d := range map[string]string{
		"missing": filepath.Join(t.TempDir(), "none"),
		"expired": p.Issue(t, pki.Node, "n1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)}),
		"a CA":    pki.CADir(p.Root),
	} {
		if src, _, err := load(t, parse(t, "--pki-dir", d)); err == nil || src != nil {
			t.Errorf("%s: Load = %v, %v", name, src, err)
		}
	}
}

func TestRequire(t *testing.T) {
	p := pkitest.New(t)
	worker := p.Source(t, pki.Worker, "w1")
	if err := pkiflag.Require(nil, pki.Worker); err != nil {
		t.Errorf("Require(plaintext) = %v", err)
	}
	if err := pkiflag.Require(worker, pki.Worker); err != nil {
		t.Errorf("Require(worker, worker) = %v", err)
	}
	if err := pkiflag.Require(worker, pki.Trainer, pki.Worker); err != nil {
		t.Errorf("Require(worker, trainer or worker) = %v", err)
	}
	for _, roles := range [][]pki.Role{{pki.Scheduler}, {pki.Trainer, pki.Admin}, nil} {
		err := pkiflag.Require(worker, roles...)
		if err == nil {
			t.Errorf("Require(worker, %v) accepted", roles)
		} else if !strings.Contains(err.Error(), "worker") {
			t.Errorf("the refusal %q does not name the identity's role", err)
		}
	}
}
