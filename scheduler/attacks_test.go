package scheduler_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
)

func schedClient(t *testing.T, addr string) styxv1.SchedulerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return styxv1.NewSchedulerServiceClient(conn)
}

// The leader publishes valid attack reports to the verdict log once,
// rejects invalid ones with a reason, and a standby refuses them.
func TestReportAttacksToTheLog(t *testing.T) {
	srv, _ := startEtcd(t)
	ns := natstest.Start(t)
	withLog := func(c *scheduler.Config) { c.NATSURL = ns.URL() }
	s1 := startScheduler(t, srv.Endpoint(), "s1", withLog)
	testwait.For(t, 10*time.Second, "leadership", s1.IsLeader)
	s2 := startScheduler(t, srv.Endpoint(), "s2", withLog)
	leaderC, standbyC := schedClient(t, s1.GRPCAddr()), schedClient(t, s2.GRPCAddr())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep := func(a string, sec int64, k attacks.Kind, reporter string) *styxv1.AttackReport {
		return attacks.Report{Addr: netip.MustParseAddr(a), Time: time.Now().Add(time.Duration(sec) * time.Second), Kind: k, Reporter: reporter}.Proto()
	}
	good := rep("203.0.113.7", -60, attacks.KindLogin, "node-1")
	noReporter := rep("2001:db8::7", -30, attacks.KindProbe, "")
	req := &styxv1.ReportAttacksRequest{NodeId: "node-1", Reports: []*styxv1.AttackReport{
		good,
		noReporter, // taken as node-1's
		rep("203.0.113.8", -60, attacks.KindLogin, "node-2"),  // another node's name
		rep("203.0.113.9", 7200, attacks.KindLogin, "node-1"), // two hours ahead
		{Address: []byte{10, 0, 0, 1}, UnixNano: time.Now().UnixNano(), Kind: "login", Reporter: "node-1"},
		{Address: netip.MustParseAddr("203.0.113.7").AsSlice(), UnixNano: time.Now().UnixNano(), Kind: "scan", Reporter: "node-1"}, // alias, not a wire kind
		good, // the same report twice in one batch
	}}
	resp, err := leaderC.ReportAttacks(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 2 || resp.Duplicates != 1 || resp.Rejected != 4 || len(resp.Errors) != 4 {
		t.Fatalf("answer %+v", resp)
	}
	for i, want := range []string{"report 2: reporter \"node-2\" is not the sending node", "report 3: time", "report 4: address 10.0.0.1: not a public", "report 5: kind \"scan\""} {
		if !strings.Contains(resp.Errors[i], want) {
			t.Errorf("error %d %q, want %q", i, resp.Errors[i], want)
		}
	}
	// Sent again (the node lost the answer): nothing new in the log.
	resp, err = leaderC.ReportAttacks(ctx, &styxv1.ReportAttacksRequest{NodeId: "node-1", Reports: []*styxv1.AttackReport{good}})
	if err != nil || resp.Accepted != 0 || resp.Duplicates != 1 {
		t.Fatalf("again: %+v %v", resp, err)
	}
	got := readLog(t, ns.URL(), []string{verdictlog.StreamProxy}, items(2))
	if len(got) != 1 || len(got[0].GetAttacks()) != 2 {
		t.Fatalf("log holds %v, want one batch of 2 reports", got)
	}
	if r := got[0].GetAttacks(); r[0].GetReporter() != "node-1" || r[1].GetReporter() != "node-1" || r[1].GetKind() != "probe" {
		t.Fatalf("published %v", r)
	}
	if st, ok := s1.LogStats(); !ok || st.Attacks != 2 || st.Messages != 1 {
		t.Fatalf("publisher stats %+v", st)
	}

	testwait.For(t, 10*time.Second, "the standby knows the leader", func() bool { li, ok := s2.Leader(); return ok && li.ID == "s1" })
	if _, err := standbyC.ReportAttacks(ctx, req); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("standby: %v, want FAILED_PRECONDITION", err)
	}
	big := &styxv1.ReportAttacksRequest{NodeId: "node-1", Reports: make([]*styxv1.AttackReport, 4097)}
	if _, err := leaderC.ReportAttacks(ctx, big); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("4097 reports: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := leaderC.ReportAttacks(ctx, &styxv1.ReportAttacksRequest{NodeId: "a/b"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad node id: %v, want INVALID_ARGUMENT", err)
	}
}

// items is a readLog condition: at least n verdicts and attack reports.
func items(n int) func([]*styxv1.LogBatch) bool {
	return func(bs []*styxv1.LogBatch) bool {
		got := 0
		for _, b := range bs {
			got += len(b.GetVerdicts()) + len(b.GetAttacks())
		}
		return got >= n
	}
}

// readLog reads streams from their start until done holds for the batches
// read, waiting up to 30 s, and returns the batches.
func readLog(t *testing.T, url string, streams []string, done func([]*styxv1.LogBatch) bool) []*styxv1.LogBatch {
	t.Helper()
	nc, err := verdictlog.Connect(url, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		out []*styxv1.LogBatch
	)
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS: js, Streams: streams,
		Cursor: func(string) (uint64, error) { return 0, nil },
		Apply: func(_ string, msgs []verdictlog.Message) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				out = append(out, m.Batch)
			}
			return nil
		},
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = f.Run(ctx) }()
	testwait.For(t, 30*time.Second, fmt.Sprintf("the log in %v", streams), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done(out)
	})
	cancel()
	<-stopped
	mu.Lock()
	defer mu.Unlock()
	return out
}
