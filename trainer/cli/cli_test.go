package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/features/featurestest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	db := featurestest.WriteTemp(t, 150, 5)
	dir := t.TempDir()
	t.Setenv("STYX_TREES", "8") // the environment overlay reaches the flags
	code, out, errs := run("train", "--db", db, "--skip-verify", "--out-dir", dir, "--progress", "lines",
		"--max-depth", "3", "--min-leaf", "5", "--model-version", "cli-test", "--holdout", "0.3")
	if code != 0 {
		t.Fatalf("train: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"model cli-test written to", "holdout, head anonymiser:", "rule-loo", "as-share"} {
		if !strings.Contains(out, want) {
			t.Errorf("train output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "training: 16/16 (100%)") {
		t.Errorf("no progress lines (STYX_TREES=8 per head):\n%s", errs)
	}
	path := filepath.Join(dir, "model.json")
	code, out, errs = run("inspect", "--model", path, "--features")
	if code != 0 || !strings.Contains(out, "model version   cli-test") || !strings.Contains(out, "(verified)") || !strings.Contains(out, "near_anon_log2") {
		t.Fatalf("inspect: exit %d\n%s\n%s", code, out, errs)
	}
	lf := filepath.Join(t.TempDir(), "l.csv")
	os.WriteFile(lf, []byte("11.0.1.1,anonymiser\n11.0.1.2,what\n"), 0o644)
	code, _, errs = run("eval", "--model", path, "--labels", lf, "--db", db, "--skip-verify")
	if code != 1 || !strings.Contains(errs, `l.csv:2: unknown label "what"`) {
		t.Fatalf("eval of a bad file: exit %d\n%s", code, errs)
	}
	code, out, _ = run("eval", "--model", path, "--labels", lf, "--db", db, "--skip-verify", "--skip-bad")
	if code != 0 || !strings.Contains(out, "head hostile:") {
		t.Fatalf("eval --skip-bad: exit %d\n%s", code, out)
	}
	if code, _, _ := run("train", "-h"); code != 0 {
		t.Fatalf("train -h: exit %d", code)
	}
	if code, _, _ := run("bogus"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	code, _, errs = run("inspect", "--model", lf)
	if code != 1 || !strings.Contains(errs, "decode model") {
		t.Fatalf("inspect of a non-model: exit %d %s", code, errs)
	}
}
