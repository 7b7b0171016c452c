package feed

import (
	"context"
	"errors"
	"testing"
	"time"

	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func v(b byte) *styxv1.Verdict { return &styxv1.Verdict{Address: []byte{10, 0, 0, b}} }

func TestReadResumeAndGap(t *testing.T) {
	f := New(7, 4)
	start := f.Revision()
	if start != 7<<32 {
		t.Fatalf("start revision %x", start)
	}
	f.Append(v(1), v(2), v(3))
	evs, rev, _, err := f.Read(start, 10)
	if err != nil || len(evs) != 3 || rev != 7<<32|3 {
		t.Fatalf("read: %v %d %x", err, len(evs), rev)
	}
	evs, _, _, err = f.Read(7<<32|2, 10)
	if err != nil || len(evs) != 1 || evs[0].Verdict.Address[3] != 3 {
		t.Fatalf("resume: %v %v", err, evs)
	}
	f.Append(v(4), v(5), v(6)) // ring of 4 now holds 3..6
	if _, _, _, err := f.Read(7<<32|1, 10); !errors.Is(err, ErrGap) {
		t.Fatalf("old revision: err %v, want ErrGap", err)
	}
	evs, _, _, err = f.Read(7<<32|2, 10)
	if err != nil || len(evs) != 4 {
		t.Fatalf("edge of ring: %v %d", err, len(evs))
	}
	if _, _, _, err := f.Read(6<<32|2, 10); !errors.Is(err, ErrGap) {
		t.Fatalf("other term: err %v, want ErrGap", err)
	}
	if _, _, _, err := f.Read(7<<32|99, 10); !errors.Is(err, ErrGap) {
		t.Fatalf("future: err %v, want ErrGap", err)
	}
}

func TestFollow(t *testing.T) {
	f := New(1, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan byte, 16)
	done := make(chan error, 1)
	from := f.Revision()
	go func() {
		done <- f.Follow(ctx, from, func(evs []*styxv1.FeedEvent) error {
			for _, e := range evs {
				got <- e.Verdict.Address[3]
			}
			return nil
		})
	}()
	f.Append(v(1))
	f.Append(v(2), v(3))
	for want := byte(1); want <= 3; want++ {
		select {
		case b := <-got:
			if b != want {
				t.Fatalf("got %d want %d", b, want)
			}
		case <-ctx.Done():
			t.Fatal("timeout")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow: %v", err)
	}
}

func atk(b byte) *styxv1.AttackReport {
	return &styxv1.AttackReport{Address: []byte{203, 0, 113, b}, Kind: "login", Reporter: "n1"}
}

// Verdicts and attack reports share the ring and its revisions.
func TestAttacksShareTheRing(t *testing.T) {
	f := New(3, 8)
	f.Append(v(1))
	f.AppendAttacks(atk(2), atk(3))
	f.Append(v(4))
	evs, rev, _, err := f.Read(3<<32, 10)
	if err != nil || len(evs) != 4 || rev != 3<<32|4 {
		t.Fatalf("read %d events, rev %x, %v", len(evs), rev, err)
	}
	if evs[0].GetVerdict() == nil || evs[1].GetAttack().GetAddress()[3] != 2 || evs[2].GetAttack() == nil || evs[3].GetVerdict() == nil {
		t.Fatalf("events %v", evs)
	}
	for i, e := range evs {
		if e.Revision != 3<<32|uint64(i+1) {
			t.Fatalf("event %d revision %x", i, e.Revision)
		}
	}
}

// A filtered follower gets only the events it keeps, plus a progress event
// once an eighth of the ring went by without one, so its revision stays
// inside the ring.
func TestFollowFilteredProgress(t *testing.T) {
	f := New(1, 64) // progress every 8 skipped events
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type got struct {
		rev    uint64
		attack bool
	}
	out := make(chan got, 64)
	done := make(chan error, 1)
	from := f.Revision()
	go func() {
		done <- f.FollowFiltered(ctx, from, func(e *styxv1.FeedEvent) bool { return e.GetAttack() != nil },
			func(evs []*styxv1.FeedEvent) error {
				for _, e := range evs {
					out <- got{e.Revision, e.GetAttack() != nil}
				}
				return nil
			})
	}()
	next := func() got {
		t.Helper()
		select {
		case g := <-out:
			return g
		case <-ctx.Done():
			t.Fatal("nothing followed")
			return got{}
		}
	}
	f.AppendAttacks(atk(1))
	if g := next(); !g.attack || g.rev != 1<<32|1 {
		t.Fatalf("first %+v", g)
	}
	for i := range 7 {
		f.Append(v(byte(i)))
	}
	f.AppendAttacks(atk(2)) // 7 skipped: no progress event before it
	if g := next(); !g.attack || g.rev != 1<<32|9 {
		t.Fatalf("second %+v", g)
	}
	for i := range 8 {
		f.Append(v(byte(i)))
	}
	if g := next(); g.attack || g.rev != 1<<32|17 {
		t.Fatalf("progress %+v", g)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow ended with %v", err)
	}
}
