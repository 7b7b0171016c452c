package integration

import (
	"context"
	"fmt"
	"github.com/nats-io/nats.go"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// readLog follows both streams of the verdict log from their start and
// hands every batch to fn, until ctx ends; the channel closes then.
func readLog(ctx context.Context, t testing.TB, url string, fn func(*styxv1.LogBatch), opts ...nats.Option) <-chan struct{} {
	t.Helper()
	nc, err := verdictlog.Connect(url, "test reader", zerolog.Nop(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS:     js,
		Cursor: func(string) (uint64, error) { return 0, nil },
		Apply: func(_ string, msgs []verdictlog.Message) error {
			for _, m := range msgs {
				fn(m.Batch)
			}
			return nil
		},
	}, zerolog.Nop())
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer nc.Close()
		_ = f.Run(ctx)
	}()
	return done
}

// logHeads reads the last sequence of each stream of the log.
func logHeads(t testing.TB, url string, opts ...nats.Option) map[string]uint64 {
	t.Helper()
	nc, err := verdictlog.Connect(url, "test heads", zerolog.Nop(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	heads := map[string]uint64{}
	testwait.For(t, 30*time.Second, "the log's heads", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, name := range verdictlog.Streams {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			if err != nil {
				return false
			}
			heads[name] = info.State.LastSeq
		}
		return true
	})
	return heads
}

// waitApplied waits until the node applied every stream up to heads.
func waitApplied(t testing.TB, n *clusternode.Node, d time.Duration, heads map[string]uint64) {
	t.Helper()
	testwait.For(t, d, fmt.Sprintf("node %s at the log's heads %v", n.ID(), heads), func() bool {
		st := n.Stats().Log
		if len(st.Streams) != len(heads) {
			return false
		}
		for _, s := range st.Streams {
			if s.Applied < heads[s.Stream] {
				return false
			}
		}
		return true
	})
}

// logPublisher returns a publisher to the log, as a leader has, and a
// function that waits until it published everything and stops it.
func logPublisher(t testing.TB, url string, opts ...nats.Option) (*verdictlog.Publisher, func()) {
	t.Helper()
	nc, err := verdictlog.Connect(url, "test publisher", zerolog.Nop(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	return p, func() {
		testwait.For(t, 30*time.Second, "the test's batches published", func() bool { return p.Stats().Queued == 0 })
		cancel()
		<-done
		nc.Close()
	}
}
