package scheduler_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
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

// The leader puts valid attack reports on the feed once, rejects invalid
// ones with a reason, and a standby refuses them.
func TestReportAttacksOnTheFeed(t *testing.T) {
	srv, _ := startEtcd(t)
	s1 := startScheduler(t, srv.Endpoint(), "s1", nil)
	testwait.For(t, 10*time.Second, "leadership", s1.IsLeader)
	s2 := startScheduler(t, srv.Endpoint(), "s2", nil)
	leaderC, standbyC := schedClient(t, s1.GRPCAddr()), schedClient(t, s2.GRPCAddr())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// From the current revision, not "now": the streams may start after
	// the reports arrive.
	from := s1.Current().Feed().Revision()
	all, err := leaderC.Feed(ctx, &styxv1.FeedRequest{FromRevision: from})
	if err != nil {
		t.Fatal(err)
	}
	only, err := leaderC.Feed(ctx, &styxv1.FeedRequest{FromRevision: from, AttacksOnly: true})
	if err != nil {
		t.Fatal(err)
	}
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
	// Sent again (the node lost the answer): nothing new on the feed.
	resp, err = leaderC.ReportAttacks(ctx, &styxv1.ReportAttacksRequest{NodeId: "node-1", Reports: []*styxv1.AttackReport{good}})
	if err != nil || resp.Accepted != 0 || resp.Duplicates != 1 {
		t.Fatalf("again: %+v %v", resp, err)
	}
	for name, st := range map[string]styxv1.SchedulerService_FeedClient{"all": all, "attacks only": only} {
		var got []*styxv1.AttackReport
		for len(got) < 2 {
			ev, err := st.Recv()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if ev.GetAttack() == nil {
				t.Fatalf("%s: unexpected event %v", name, ev)
			}
			got = append(got, ev.GetAttack())
		}
		if got[0].GetReporter() != "node-1" || got[1].GetReporter() != "node-1" || got[1].GetKind() != "probe" {
			t.Fatalf("%s: %v", name, got)
		}
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
