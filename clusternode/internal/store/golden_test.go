package store

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// TestStoredVerdictsGolden pins the on-disk form of a verdict: the store
// writes the bytes of testdata/stored_verdicts.golden for each verdict
// (the same as files already hold), and reads them back as the verdict.
func TestStoredVerdictsGolden(t *testing.T) {
	cases := map[string]struct {
		in   *styxv1.Verdict
		want verdict.Verdict
	}{
		"full": {
			&styxv1.Verdict{Proxy: true, Type: "SOCKS5", Risk: 100, ModelVersion: "raven-v7", Evidence: []string{"locdb:hosting-as", "proxyprobe:SOCKS5:1080"}, Port: 1080, InferredUnixNano: 1_700_000_000_123_456_789},
			verdict.Verdict{Proxy: true, Type: "SOCKS5", Risk: 100, ModelVersion: "raven-v7", Evidence: []string{"locdb:hosting-as", "proxyprobe:SOCKS5:1080"}, Port: 1080, Inferred: time.Unix(1_700_000_000, 123_456_789)},
		},
		"clean": {
			&styxv1.Verdict{ModelVersion: "rule-v1", Evidence: []string{}, InferredUnixNano: 1_700_000_000_000_000_000},
			verdict.Verdict{ModelVersion: "rule-v1", Inferred: time.Unix(1_700_000_000, 0)},
		},
		"feed": { // the address is not stored
			&styxv1.Verdict{Address: []byte{192, 0, 2, 7}, Proxy: true, Type: "Hostile", Risk: 100, ModelVersion: "m1", Evidence: []string{"locdb:drop"}, InferredUnixNano: 1_700_000_001_000_000_000},
			verdict.Verdict{Proxy: true, Type: "Hostile", Risk: 100, ModelVersion: "m1", Evidence: []string{"locdb:drop"}, Inferred: time.Unix(1_700_000_001, 0)},
		},
		"no-time": {
			&styxv1.Verdict{Type: "Hosting", Risk: 33, ModelVersion: "m1"},
			verdict.Verdict{Type: "Hosting", Risk: 33, ModelVersion: "m1"},
		},
	}
	f, err := os.Open(filepath.Join("testdata", "stored_verdicts.golden"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, hexed, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		c, ok := cases[name]
		if !ok {
			t.Fatalf("golden verdict %q has no case", name)
		}
		seen++
		stored, err := hex.DecodeString(hexed)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeVerdict(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, stored) {
			t.Errorf("%s: writes %x, files hold %x", name, got, stored)
		}
		v, err := decodeVerdict(stored)
		if err != nil {
			t.Fatal(err)
		}
		if !equalVerdict(v, c.want) || v.Error != "" || v.Inferred.IsZero() != c.want.Inferred.IsZero() {
			t.Errorf("%s: reads %+v, want %+v", name, v, c.want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(cases) {
		t.Fatalf("%d golden verdicts, want %d", seen, len(cases))
	}
}
