package attackfeed

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

// fakeLeader serves Feed: each stream sends the events queued for it, then
// ends with endErr (or stays open when nil). A request below floor gets
// OUT_OF_RANGE.
type fakeLeader struct {
	styxv1.UnimplementedSchedulerServiceServer
	mu     sync.Mutex
	reqs   []*styxv1.FeedRequest
	script [][]*styxv1.FeedEvent // one list per stream
	floor  uint64
	addr   string
	srv    *grpc.Server
}

func startFake(t *testing.T, floor uint64, script ...[]*styxv1.FeedEvent) *fakeLeader {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLeader{script: script, floor: floor, addr: lis.Addr().String(), srv: grpc.NewServer()}
	styxv1.RegisterSchedulerServiceServer(f.srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.srv.Serve(lis) }()
	t.Cleanup(func() { f.srv.Stop(); <-done })
	return f
}

func (f *fakeLeader) Feed(req *styxv1.FeedRequest, stream styxv1.SchedulerService_FeedServer) error {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	if r := req.GetFromRevision(); r != 0 && r < f.floor {
		f.mu.Unlock()
		return status.Error(codes.OutOfRange, "too old")
	}
	var evs []*styxv1.FeedEvent
	last := len(f.script) == 0
	if !last {
		evs, f.script = f.script[0], f.script[1:]
		last = len(f.script) == 0
	}
	f.mu.Unlock()
	for _, ev := range evs {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	if last {
		<-stream.Context().Done()
		return nil
	}
	return status.Error(codes.Unavailable, "stream broken by the test")
}

func (f *fakeLeader) requests() []*styxv1.FeedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*styxv1.FeedRequest(nil), f.reqs...)
}

func attackEv(rev uint64, a string, sec int64, k attacks.Kind) *styxv1.FeedEvent {
	r := attacks.Report{Addr: netip.MustParseAddr(a), Time: time.Unix(1_700_000_000+sec, 0), Kind: k, Reporter: "node-1"}
	return &styxv1.FeedEvent{Revision: rev, Attack: r.Proto()}
}

func TestFollowResumeAndGap(t *testing.T) {
	const term = 5 << 32
	f := startFake(t, term|3,
		// stream 1: two reports, a duplicate, an invalid one, then it breaks
		[]*styxv1.FeedEvent{
			attackEv(term|1, "203.0.113.7", 1, attacks.KindLogin),
			attackEv(term|2, "203.0.113.7", 2, attacks.KindProbe),
			attackEv(term|3, "203.0.113.7", 2, attacks.KindProbe),
			{Revision: term | 4, Attack: &styxv1.AttackReport{Address: []byte{1}}},
		},
		// stream 2 (resumed from term|4): a progress event, then it breaks
		[]*styxv1.FeedEvent{{Revision: term | 10}},
		// stream 3 (resumed from term|10): one more report, stays open
		[]*styxv1.FeedEvent{attackEv(term|11, "2001:db8::1", 3, attacks.KindDDoS)},
	)
	table := attacks.NewTable(1000)
	leaders := make(chan keyspace.LeaderInfo, 1)
	leaders <- keyspace.LeaderInfo{ID: "s1", GRPCAddr: f.addr}
	fl := startFollower(t, leaders, Config{
		Table:      table,
		BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond,
	})

	testwait.For(t, testwait.Timeout, "three reports", func() bool { return fl.Stats().Reports == 3 })
	testwait.For(t, testwait.Timeout, "the revision", func() bool { return fl.Stats().Revision == term|11 })
	n, last := table.Attacks(netip.MustParseAddr("203.0.113.7"))
	if n != 2 || !last.Equal(time.Unix(1_700_000_002, 0)) {
		t.Fatalf("203.0.113.7: %d, %v", n, last)
	}
	if c, ok := table.Counts(netip.MustParseAddr("2001:db8::1")); !ok || c.ByKind[attacks.KindDDoS] != 1 {
		t.Fatalf("2001:db8::1: %+v", c)
	}
	st := fl.Stats()
	if st.Invalid != 1 || st.Gaps != 0 || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
	reqs := f.requests()
	if len(reqs) != 3 || reqs[0].GetFromRevision() != 0 || reqs[1].GetFromRevision() != term|4 || reqs[2].GetFromRevision() != term|10 {
		t.Fatalf("requests %v", reqs)
	}
	for _, r := range reqs {
		if !r.GetAttacksOnly() {
			t.Fatal("feed requested without attacks_only")
		}
	}

	// A new leader whose ring does not hold the revision: from now.
	g := startFake(t, term|100)
	leaders <- keyspace.LeaderInfo{ID: "s2", GRPCAddr: g.addr}
	testwait.For(t, testwait.Timeout, "a gap", func() bool { return fl.Stats().Gaps == 1 })
	testwait.For(t, testwait.Timeout, "following from now", func() bool {
		r := g.requests()
		return len(r) == 2 && r[1].GetFromRevision() == 0
	})
}

// With a history table, the follower asks for the whole feed and folds
// verdicts and attack reports into it; the reports reach the attack table
// through it.
func TestFollowIntoHistory(t *testing.T) {
	const term = 6 << 32
	verdict := func(rev uint64, a string, proxy bool) *styxv1.FeedEvent {
		return &styxv1.FeedEvent{Revision: rev, Verdict: &styxv1.Verdict{Address: netip.MustParseAddr(a).AsSlice(), Proxy: proxy, InferredUnixNano: 1_700_000_000e9}}
	}
	f := startFake(t, 0, []*styxv1.FeedEvent{
		verdict(term|1, "203.0.113.1", true),
		verdict(term|2, "203.0.113.2", false),
		attackEv(term|3, "203.0.113.2", 1, attacks.KindLogin),
		attackEv(term|4, "203.0.113.2", 1, attacks.KindLogin), // a duplicate
	})
	table := attacks.NewTable(100)
	hist := history.New(history.Config{Attacks: table})
	leaders := make(chan keyspace.LeaderInfo, 1)
	leaders <- keyspace.LeaderInfo{ID: "s1", GRPCAddr: f.addr}
	fl := startFollower(t, leaders, Config{Table: table, History: hist})
	testwait.For(t, testwait.Timeout, "the history", func() bool { return hist.Revision() == term|4 })
	if st := fl.Stats(); st.Verdicts != 2 || st.Reports != 1 {
		t.Fatalf("stats %+v", st)
	}
	if c := hist.Bucket(history.BucketKey(netip.MustParseAddr("203.0.113.9"))); c != (history.Counts{Verdicts: 2, Proxies: 1, Attacks: 1}) {
		t.Fatalf("bucket %+v", c)
	}
	if n, _ := table.Attacks(netip.MustParseAddr("203.0.113.2")); n != 1 {
		t.Fatalf("attack table: %d", n)
	}
	if r := f.requests(); len(r) != 1 || r[0].GetAttacksOnly() {
		t.Fatalf("requests %v", r)
	}
}

// startFollower runs a Follower of cfg that learns its leaders from
// leaders, until the test ends.
func startFollower(t *testing.T, leaders chan keyspace.LeaderInfo, cfg Config) *Follower {
	t.Helper()
	cfg.Leaders = func(context.Context) <-chan keyspace.LeaderInfo { return leaders }
	fl, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return fl
}
