package store

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/attacks"
)

func report(a netip.Addr, sec int64, k attacks.Kind, reporter string) attacks.Report {
	return attacks.Report{Addr: a, Time: time.Unix(1_700_000_000+sec, 0), Kind: k, Reporter: reporter}
}

func TestAddAttacksOutboxAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path)
	a := netip.MustParseAddr("203.0.113.7")
	rs := []attacks.Report{
		report(a, 1, attacks.KindLogin, "n1"),
		report(a, 2, attacks.KindLogin, "n1"),
		report(a, 2, attacks.KindProbe, "n1"),
		report(a, 1, attacks.KindLogin, "n1"), // the same as the first
	}
	res, err := s.AddAttacks(rs)
	if err != nil || res != (AttackResult{New: 3, Duplicates: 1}) {
		t.Fatalf("add: %+v %v", res, err)
	}
	if res, _ := s.AddAttacks(rs[:1]); res.Duplicates != 1 {
		t.Fatalf("add again: %+v", res)
	}
	if n := s.OutboxLen(); n != 3 {
		t.Fatalf("outbox %d, want 3 (only new reports)", n)
	}
	box, err := s.AttackOutbox(2)
	if err != nil || len(box) != 2 || box[0].Seq >= box[1].Seq {
		t.Fatalf("outbox: %+v %v", box, err)
	}
	if r, err := attacks.FromProto(box[0].Report); err != nil || r.Key() != rs[0].Key() {
		t.Fatalf("first queued %+v %v", r, err)
	}
	if err := s.AckAttacks([]uint64{box[0].Seq, box[1].Seq, box[1].Seq}); err != nil {
		t.Fatal(err)
	}
	if n := s.OutboxLen(); n != 1 {
		t.Fatalf("outbox %d after ack, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	h, err := s.Attacks(netip.MustParseAddr("::ffff:203.0.113.7"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Total() != 3 || h.Counts[attacks.KindLogin] != 2 || h.Counts[attacks.KindProbe] != 1 || len(h.Events) != 3 {
		t.Fatalf("history after reopen: %+v", h)
	}
	if !h.Last().Equal(time.Unix(1_700_000_002, 0)) {
		t.Fatalf("last %v", h.Last())
	}
	if box, _ := s.AttackOutbox(10); len(box) != 1 || s.OutboxLen() != 1 {
		t.Fatalf("outbox after reopen: %d entries, len %d", len(box), s.OutboxLen())
	}
	if h, _ := s.Attacks(netip.MustParseAddr("198.51.100.1")); h.Total() != 0 || !h.Last().IsZero() {
		t.Fatalf("unknown address: %+v", h)
	}
}

func TestOutboxFull(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "node.db"), OutboxMax: 3}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := netip.MustParseAddr("203.0.113.7")
	if _, err := s.AddAttacks([]attacks.Report{report(a, 1, attacks.KindLogin, "n1"), report(a, 2, attacks.KindLogin, "n1")}); err != nil {
		t.Fatal(err)
	}
	_, err = s.AddAttacks([]attacks.Report{report(a, 3, attacks.KindLogin, "n1"), report(a, 4, attacks.KindLogin, "n1")})
	if !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("err %v, want ErrOutboxFull", err)
	}
	if h, _ := s.Attacks(a); h.Total() != 2 {
		t.Fatalf("a refused batch was partly written: %+v", h)
	}
	// Reports from the log do not enter the outbox, full or not.
	if _, ar, err := s.ApplyLog(testStream, 1, nil, []attacks.Report{report(a, 5, attacks.KindDDoS, "n2")}); err != nil || ar.New != 1 {
		t.Fatalf("apply log: %+v %v", ar, err)
	}
	if s.OutboxLen() != 2 {
		t.Fatalf("outbox %d, want 2", s.OutboxLen())
	}
}

// A history keeps the newest AttackEvents reports; a report older than
// all of a full history is ignored, so replaying a whole log changes
// nothing, and nodes applying the log in the same order converge.
func TestAttackHistoryBound(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "node.db"), AttackEvents: 5}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := netip.MustParseAddr("2001:db8::7")
	var log []attacks.Report
	for i := range 20 {
		log = append(log, report(a, int64(i), attacks.KindLogin, "n1"))
	}
	var seq uint64
	apply := func(rs []attacks.Report) AttackResult {
		t.Helper()
		seq++ // the log replayed: the same reports in new messages
		_, ar, err := s.ApplyLog(testStream, seq, nil, rs)
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}
	if ar := apply(log); ar.New != 20 {
		t.Fatalf("first pass %+v", ar)
	}
	if ar := apply(log); ar.New != 0 || ar.TooOld != 15 || ar.Duplicates != 5 {
		t.Fatalf("replay %+v", ar)
	}
	h, _ := s.Attacks(a)
	if h.Total() != 20 || len(h.Events) != 5 || !h.Events[0].Time.Equal(log[15].Time) {
		t.Fatalf("history %+v", h)
	}
	// A report in the middle of the kept window is new.
	mid := report(a, 17, attacks.KindProbe, "n1")
	if ar := apply([]attacks.Report{mid}); ar.New != 1 {
		t.Fatalf("mid %+v", ar)
	}
	if h, _ := s.Attacks(a); h.Total() != 21 || len(h.Events) != 5 || h.Counts[attacks.KindProbe] != 1 {
		t.Fatalf("history %+v", h)
	}
}

func TestDecodeHistoryRejectsGarbage(t *testing.T) {
	h := AttackHistory{Events: []AttackEvent{{Time: time.Unix(1_700_000_000, 0), Kind: attacks.KindForm, Reporter: "n1"}}}
	h.Counts[attacks.KindForm] = 1
	b := encodeHistory(&h)
	if got, err := decodeHistory(b); err != nil || got.Total() != 1 || got.Events[0].Reporter != "n1" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := range b {
		if _, err := decodeHistory(b[:i]); err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
	}
	if _, err := decodeHistory(append(b, 0)); err == nil {
		t.Fatal("trailing byte decoded")
	}
}

// OnAttacks gets the reports that were new, from AddAttacks and from the
// log; ScanAttacks reads every history back.
func TestOnAttacksAndScan(t *testing.T) {
	var got []attacks.Report
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "node.db"), OnAttacks: func(rs []attacks.Report) {
		got = append(got, rs...)
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::9")
	r1, r2, r3 := report(a, 1, attacks.KindLogin, "n1"), report(a, 2, attacks.KindProbe, "n1"), report(b, 3, attacks.KindDDoS, "n2")
	if _, err := s.AddAttacks([]attacks.Report{r1, r1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyLog(testStream, 5, nil, []attacks.Report{r1, r2, r3}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Key() != r1.Key() || got[1].Key() != r2.Key() || got[2].Key() != r3.Key() {
		t.Fatalf("hook got %+v, want the 3 distinct reports in order", got)
	}
	seen := map[netip.Addr]uint64{}
	if err := s.ScanAttacks(func(addr netip.Addr, h AttackHistory) { seen[addr] = h.Total() }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[a] != 2 || seen[b] != 1 {
		t.Fatalf("scan %v", seen)
	}
}
