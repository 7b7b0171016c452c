package store

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/styx-inference/styx/pkg/columns"
)

func TestSightingOutboxSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path)
	if got, err := s.PendingSightings(); err != nil || len(got) != 0 {
		t.Fatalf("new store: %v, %v; want an empty outbox", got, err)
	}
	sgs := []columns.Sighting{
		{ID: 10, Addr: addr4, Seen: t0.UnixNano()},
		{ID: 11, Addr: addr6, Seen: t0.UnixNano() + 1},
		{ID: 12, Addr: netip.MustParseAddr("::ffff:198.51.100.9"), Seen: t0.UnixNano() + 2},
		{ID: 13, Addr: netip.MustParseAddr("203.0.113.1"), Seen: -5},
	}
	if err := s.SaveSightings(sgs[:2], nil); err != nil {
		t.Fatal(err)
	}
	// One commit adds and removes; removing an id not there is harmless.
	if err := s.SaveSightings(sgs[2:], []uint64{10, 99}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSightings(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSightings([]columns.Sighting{{ID: 14}}, nil); err == nil {
		t.Fatal("a sighting without address was saved")
	}
	// Closed without resolving the rest.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	got, err := s.PendingSightings()
	if err != nil {
		t.Fatal(err)
	}
	want := []columns.Sighting{sgs[1], sgs[2], sgs[3]}
	want[1].Addr = netip.MustParseAddr("198.51.100.9") // normalized
	if !slices.Equal(got, want) {
		t.Fatalf("after reopen: %+v\nwant %+v", got, want)
	}
	if err := s.SaveSightings(nil, []uint64{11, 12, 13}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PendingSightings(); err != nil || len(got) != 0 {
		t.Fatalf("after every id resolved: %+v, %v", got, err)
	}
}
