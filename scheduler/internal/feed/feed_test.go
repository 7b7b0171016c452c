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
