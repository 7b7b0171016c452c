package store

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/styx-inference/styx/pkg/verdict"
)

func TestForEachVerdictReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path)
	mapped := netip.MustParseAddr("::ffff:198.51.100.1")
	if _, err := s.Put([]Item{
		{addr6, wireVerdict(false, "", 0, t0)},
		{mapped, wireVerdict(true, "SOCKS5", 90, t0)},
		{addr4, wireVerdict(true, "VPN", 80, t0)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := OpenReadOnly(path, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var got []string
	err = ro.ForEachVerdict(func(a netip.Addr, v verdict.Verdict) error {
		got = append(got, a.String()+" "+v.Type)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Keys are 16 bytes, IPv4 mapped (::ffff:a.b.c.d), so IPv4 comes first.
	want := "192.0.2.7 VPN|198.51.100.1 SOCKS5|2001:db8::7 "
	if strings.Join(got, "|") != want {
		t.Fatalf("ForEachVerdict = %q, want %q", strings.Join(got, "|"), want)
	}
	if e := mustGet(t, ro, addr4); !e.HasVerdict || e.Verdict.Risk != 80 {
		t.Fatalf("Lookup on the read-only store = %+v", e)
	}

	stop := errors.New("stop")
	n := 0
	err = ro.ForEachVerdict(func(netip.Addr, verdict.Verdict) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ForEachVerdict stopping = %v after %d calls", err, n)
	}
	if _, err := ro.Put([]Item{{addr4, wireVerdict(true, "VPN", 81, t0.Add(time.Second))}}); err == nil {
		t.Fatal("Put on a read-only store succeeded")
	}
}

func TestOpenReadOnlyInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path) // holds the file lock, as a running node does
	defer s.Close()
	start := time.Now()
	_, err := OpenReadOnly(path, 50*time.Millisecond, zerolog.Nop())
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("OpenReadOnly on a locked store = %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), "store is in use by a running node; stop it or copy the file") {
		t.Fatalf("error %q lacks the advice", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("OpenReadOnly took %s", d)
	}
}

func TestOpenReadOnlyBadFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	if _, err := OpenReadOnly(missing, 0, zerolog.Nop()); err == nil {
		t.Fatal("OpenReadOnly of a missing file succeeded")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("OpenReadOnly created %s: %v", missing, err)
	}

	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(other, 0, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "not a styx-node store") {
		t.Fatalf("OpenReadOnly of a foreign bbolt file = %v", err)
	}
}
