package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
)

// writeHistoryFiles writes a verdicts file (one verdict on the second
// address of every network, a proxy when the network is flagged) and an
// attacks file in which the first address of most flagged networks and
// of a few clean ones was reported: history that the location database
// does not hold.
func writeHistoryFiles(t *testing.T, db *locdb.DB) (verdicts, reports string) {
	t.Helper()
	dir := t.TempDir()
	var vb, ab strings.Builder
	vb.WriteString("address,label\n")
	rng := rand.New(rand.NewPCG(5, 6))
	at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for n := range db.Networks() {
		flagged := n.Flags.AnonymousProxy() || n.Flags.Drop()
		if a := n.Prefix.Addr().Next(); n.Prefix.Contains(a) {
			label := "clean"
			if flagged {
				label = "anonymiser"
			}
			fmt.Fprintf(&vb, "%s,%s\n", a, label)
		}
		p := 0.03
		if flagged {
			p = 0.7
		}
		if rng.Float64() < p {
			fmt.Fprintf(&ab, "%s,%d,probe\n", n.Prefix.Addr(), at.Add(time.Duration(rng.IntN(1000))*time.Hour).Unix())
		}
	}
	verdicts, reports = filepath.Join(dir, "verdicts.csv"), filepath.Join(dir, "attacks.csv")
	if err := os.WriteFile(verdicts, []byte(vb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reports, []byte(ab.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return verdicts, reports
}

func openDB(t *testing.T, path string) *locdb.DB {
	t.Helper()
	db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestHistoryBeatsSchema1: with a history that holds what the database
// does not (attack reports on flagged networks), the schema 2 model finds
// held-out flagged networks better than the schema 1 model trained on the
// same examples. Without history files, schema 2's history features are
// 0 and its provenance says so.
func TestHistoryBeatsSchema1(t *testing.T) {
	path := featurestest.WriteTemp(t, 400, 1)
	verdicts, reports := writeHistoryFiles(t, openDB(t, path))

	cfg1 := testConfig(t, path)
	cfg1.Schema = features.SchemaVersion
	r1, err := Train(context.Background(), cfg1, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, path)
	cfg2.VerdictsFile, cfg2.AttacksFile = verdicts, reports
	r2, err := Train(context.Background(), cfg2, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Model.SchemaVersion != 1 || len(r1.Model.Features) != features.Count || r2.Model.SchemaVersion != 2 || len(r2.Model.Features) != features.CountHistory {
		t.Fatalf("schemas %d (%d features) and %d (%d features)", r1.Model.SchemaVersion, len(r1.Model.Features), r2.Model.SchemaVersion, len(r2.Model.Features))
	}
	if r1.Model.Provenance.History != "" || !strings.Contains(r2.Model.Provenance.History, "verdicts.csv") || !strings.Contains(r2.Model.Provenance.History, "attacks.csv") {
		t.Fatalf("history provenance %q and %q", r1.Model.Provenance.History, r2.Model.Provenance.History)
	}
	for _, head := range heads {
		e1, e2 := metricsOf(t, r1.Model, "holdout", head), metricsOf(t, r2.Model, "holdout", head)
		t.Logf("%s held out: schema 1 PR-AUC %.3f ROC-AUC %.3f F1 %.3f; schema 2 PR-AUC %.3f ROC-AUC %.3f F1 %.3f",
			head, e1.Model.PRAUC, e1.Model.ROCAUC, e1.Model.F1, e2.Model.PRAUC, e2.Model.ROCAUC, e2.Model.F1)
		if e2.Model.Positives != e1.Model.Positives || e2.Model.Positives < 20 {
			t.Fatalf("%s: %d and %d held-out positives", head, e1.Model.Positives, e2.Model.Positives)
		}
		if e2.Model.PRAUC < e1.Model.PRAUC+0.02 {
			t.Errorf("%s: schema 2 PR-AUC %.3f does not beat schema 1's %.3f", head, e2.Model.PRAUC, e1.Model.PRAUC)
		}
	}
	if _, err := model.Load(r2.Path); err != nil {
		t.Fatal(err)
	}

	// No history: zeros, and the provenance says so.
	cfg0 := testConfig(t, path)
	cfg0.Params.Trees = 3
	r0, err := Train(context.Background(), cfg0, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r0.Model.SchemaVersion != 2 || r0.Model.Provenance.History != NoHistory {
		t.Fatalf("schema %d, history %q", r0.Model.SchemaVersion, r0.Model.Provenance.History)
	}
}

// An example's own verdict never feeds its own bucket and AS features:
// an address example leaves itself out, a database network all of its
// addresses.
func TestHistoryLeaveOneOut(t *testing.T) {
	db := openDB(t, featurestest.WriteTemp(t, 40, 3))
	var nw locdb.Network
	for n := range db.Networks() {
		if n.Prefix.Addr().Is4() && n.Prefix.Bits() <= 28 && n.ASN != 0 {
			nw = n
			break
		}
	}
	a0 := nw.Prefix.Addr()
	a1, a2 := a0.Next(), a0.Next().Next()
	dir := t.TempDir()
	vf := filepath.Join(dir, "v.csv")
	if err := os.WriteFile(vf, []byte(fmt.Sprintf("%s,anonymiser\n%s,clean\n%s,anonymiser\n", a0, a1, a2)), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := loadHistory(db, vf, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, features.CountHistory)
	h.writeAddr(a1, nw.ASN, x)
	if x[features.HistBucketVerdicts] != 2 || x[features.HistBucketProxyShare] != 2.0/4 || x[features.HistASVerdicts] != 2 {
		t.Fatalf("address example %s: bucket %v share %v AS %v", a1, x[features.HistBucketVerdicts], x[features.HistBucketProxyShare], x[features.HistASVerdicts])
	}
	h.writeAddr(a0, nw.ASN, x)
	if x[features.HistBucketVerdicts] != 2 || x[features.HistBucketProxyShare] != 1.0/4 {
		t.Fatalf("address example %s: bucket %v share %v", a0, x[features.HistBucketVerdicts], x[features.HistBucketProxyShare])
	}
	h.writeNetwork(nw, x)
	if x[features.HistBucketVerdicts] != 0 || x[features.HistASVerdicts] != 0 || x[features.HistBucketProxyShare] != 0 {
		t.Fatalf("network example %s: bucket %v AS %v", nw.Prefix, x[features.HistBucketVerdicts], x[features.HistASVerdicts])
	}
	// A prefix is not a verdict.
	if err := os.WriteFile(vf, []byte(fmt.Sprintf("%s,anonymiser\n", nw.Prefix)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadHistory(db, vf, "", time.Now()); err == nil || !strings.Contains(err.Error(), "one address") {
		t.Fatalf("a prefix as a verdict: %v", err)
	}
}

// readHashed sums the whole file however much of it read consumed.
func TestReadHashedSumsWholeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := []byte("203.0.113.7,proxy\n198.51.100.1,clean\n")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	for _, n := range []int64{0, 5, int64(len(data))} {
		got, err := readHashed(path, func(r io.Reader) error {
			_, err := io.CopyN(io.Discard, r, n)
			return err
		})
		if err != nil || got != hex.EncodeToString(want[:]) {
			t.Fatalf("read %d bytes: sum %s, %v; want %x", n, got, err, want)
		}
	}
}
