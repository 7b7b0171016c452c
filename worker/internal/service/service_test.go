package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeEngine derives a verdict from the address's last byte. With a gate,
// Examine blocks until release is called, so batches stay in flight.
type fakeEngine struct {
	gate chan struct{}
	once sync.Once
}

const fakeVersion = "fake-v1"

// poison makes the fake engine panic.
var poison = netip.MustParseAddr("203.0.113.66")

func newGatedEngine() *fakeEngine { return &fakeEngine{gate: make(chan struct{})} }

func (e *fakeEngine) release() {
	if e.gate != nil {
		e.once.Do(func() { close(e.gate) })
	}
}

func (e *fakeEngine) Examine(a netip.Addr) verdict.Verdict {
	if e.gate != nil {
		<-e.gate
	}
	return fakeVerdict(a)
}

func (e *fakeEngine) ModelVersion() string { return fakeVersion }

func fakeVerdict(a netip.Addr) verdict.Verdict {
	if a == poison {
		panic("poison")
	}
	b := a.AsSlice()
	last := b[len(b)-1]
	v := verdict.Verdict{Risk: uint32(last) % 101, Evidence: []string{fmt.Sprintf("fake:%d", len(b))}}
	if last%2 == 1 {
		v.Proxy, v.Type = true, "Fake"
	}
	return v
}

type harness struct {
	svc    *Service
	client styxv1.WorkerServiceClient
}

// start serves a Service with cfg on 127.0.0.1:0. Zero fields of cfg get
// test defaults (capacity 3, a fake engine).
func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.WorkerID == "" {
		cfg.WorkerID = "w1"
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 3
	}
	if cfg.Engine == nil {
		cfg.Engine = &fakeEngine{}
	}
	svc, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	styxv1.RegisterWorkerServiceServer(srv, svc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(ctx) })
	wg.Go(func() { _ = srv.Serve(lis) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e, ok := cfg.Engine.(*fakeEngine); ok {
			e.release()
		}
		conn.Close()
		cancel()
		srv.Stop()
		wg.Wait()
	})
	return &harness{svc: svc, client: styxv1.NewWorkerServiceClient(conn)}
}

type stream struct {
	t      *testing.T
	s      styxv1.WorkerService_WorkClient
	cancel context.CancelFunc
}

// stream opens a Work stream without sending anything.
func (h *harness) stream(t *testing.T) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	s, err := h.client.Work(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &stream{t: t, s: s, cancel: cancel}
}

// open opens a session with term and returns its Ready report.
func (h *harness) open(t *testing.T, term int64) (*stream, *styxv1.WorkReport) {
	t.Helper()
	st := h.stream(t)
	st.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "s1", Term: term}}})
	r := st.recv()
	if r.GetReady() == nil {
		t.Fatalf("first report %v, want Ready", r)
	}
	return st, r
}

func (st *stream) send(m *styxv1.WorkAssign) {
	st.t.Helper()
	if err := st.s.Send(m); err != nil {
		st.t.Fatalf("send: %v", err)
	}
}

func (st *stream) batch(id uint64, term int64, addrs ...[]byte) {
	st.t.Helper()
	st.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: &styxv1.Batch{
		BatchId: id, Term: term, Attempt: uint32(id % 3), Addresses: blob(addrs...),
	}}})
}

// blob joins addresses into a batch's 16-byte columns; a slice that is no
// address (not 4 or 16 bytes) is copied as it is, making the blob ragged.
func blob(addrs ...[]byte) []byte {
	var out []byte
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a); ok {
			out = columns.AppendAddr(out, ip)
		} else {
			out = append(out, a...)
		}
	}
	return out
}

// verdictsOf decodes a result's verdicts.
func verdictsOf(t *testing.T, res *styxv1.Result) []*styxv1.Verdict {
	t.Helper()
	vs, err := columns.Verdicts(res.GetVerdicts(), int(res.GetVerdicts().GetCount()))
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func (st *stream) recv() *styxv1.WorkReport {
	st.t.Helper()
	r, err := st.s.Recv()
	if err != nil {
		st.t.Fatalf("recv: %v", err)
	}
	return r
}

// recvErr reads until the stream ends and returns its status code.
func (st *stream) recvErr() (codes.Code, []*styxv1.WorkReport) {
	st.t.Helper()
	var got []*styxv1.WorkReport
	for {
		r, err := st.s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return codes.OK, got
			}
			return status.Code(err), got
		}
		got = append(got, r)
	}
}

func v4(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }
func v6(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }

func addrs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		if i%3 == 0 {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}).As16()
			out[i] = a[:]
		} else {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).As4()
			out[i] = a[:]
		}
	}
	return out
}

// checkResult verifies a result against the batch that produced it.
func checkResult(t *testing.T, r *styxv1.WorkReport, id uint64, term int64, in [][]byte, credit uint32) {
	t.Helper()
	res := r.GetResult()
	if res == nil {
		t.Fatalf("report %v, want a Result", r)
	}
	if res.GetBatchId() != id || res.GetTerm() != term || res.GetAttempt() != uint32(id%3) {
		t.Errorf("result echoes batch %d term %d attempt %d, want %d %d %d",
			res.GetBatchId(), res.GetTerm(), res.GetAttempt(), id, term, id%3)
	}
	if r.GetCredit() != credit {
		t.Errorf("result credit %d, want %d", r.GetCredit(), credit)
	}
	if res.GetBusyNanos() <= 0 {
		t.Errorf("busy_nanos %d, want > 0", res.GetBusyNanos())
	}
	vs := verdictsOf(t, res)
	if len(vs) != len(in) {
		t.Fatalf("%d verdicts for %d addresses", len(vs), len(in))
	}
	for i, v := range vs {
		a, _ := netip.AddrFromSlice(in[i])
		want := fakeVerdict(a.Unmap())
		if v.GetProxy() != want.Proxy || v.GetType() != want.Type || v.GetRisk() != want.Risk ||
			!slices.Equal(v.GetEvidence(), want.Evidence) || v.GetError() != "" {
			t.Fatalf("verdict %d for %s = %v, want %+v", i, a, v, want)
		}
		if v.GetModelVersion() != fakeVersion || v.GetInferredUnixNano() <= 0 {
			t.Fatalf("verdict %d: model %q, inferred %d", i, v.GetModelVersion(), v.GetInferredUnixNano())
		}
	}
}

func TestOpenReady(t *testing.T) {
	h := start(t, Config{WorkerID: "host-numa0", Capacity: 5})
	_, r := h.open(t, 7)
	want := &styxv1.Ready{WorkerId: "host-numa0", ModelVersion: fakeVersion}
	if got := r.GetReady(); got.GetWorkerId() != want.WorkerId || got.GetModelVersion() != want.ModelVersion || got.GetDraining() {
		t.Errorf("Ready = %v, want %v", got, want)
	}
	if r.GetCredit() != 5 {
		t.Errorf("credit %d, want 5", r.GetCredit())
	}
	if got := h.svc.NewestTerm(); got != 7 {
		t.Errorf("NewestTerm = %d, want 7", got)
	}
}

func TestFirstMessageMustBeOpen(t *testing.T) {
	h := start(t, Config{})
	st := h.stream(t)
	st.batch(1, 1, v4("192.0.2.1"))
	if code, _ := st.recvErr(); code != codes.InvalidArgument {
		t.Errorf("stream ended with %s, want InvalidArgument", code)
	}
}

func TestResultsInOrder(t *testing.T) {
	h := start(t, Config{Capacity: 4})
	st, _ := h.open(t, 3)
	batches := []struct {
		name  string
		addrs [][]byte
	}{
		{"ipv4", [][]byte{v4("192.0.2.1"), v4("192.0.2.2"), v4("198.51.100.255")}},
		{"ipv6 and mapped ipv4", [][]byte{v6("2001:db8::1"), v6("::ffff:192.0.2.7"), v4("192.0.2.8")}},
		{"several chunks", addrs(2*DefaultChunkSize + 7)},
		{"one address", [][]byte{v4("203.0.113.9")}},
	}
	for i, b := range batches {
		st.batch(uint64(i+1), 3, b.addrs...)
	}
	got := map[uint64]*styxv1.WorkReport{}
	for range batches {
		r := st.recv()
		got[r.GetResult().GetBatchId()] = r
	}
	for i, b := range batches {
		t.Run(b.name, func(t *testing.T) {
			checkResult(t, got[uint64(i+1)], uint64(i+1), 3, b.addrs, 1)
		})
	}
}

func TestSmallChunks(t *testing.T) {
	h := start(t, Config{Capacity: 2, ChunkSize: 3, Workers: 4})
	st, _ := h.open(t, 1)
	b := addrs(3*7 + 2)
	st.batch(1, 1, b...)
	checkResult(t, st.recv(), 1, 1, b, 1)
	if err := (Config{WorkerID: "w", Capacity: 1, Engine: raven.Nop{}, ChunkSize: -1}).Validate(); err == nil {
		t.Error("a negative chunk size was accepted")
	}
}

func TestCreditWindow(t *testing.T) {
	eng := newGatedEngine()
	h := start(t, Config{Capacity: 3, Engine: eng, Workers: 2})
	st, ready := h.open(t, 1)
	if ready.GetCredit() != 3 {
		t.Fatalf("credit %d, want 3", ready.GetCredit())
	}
	in := [][]byte{v4("192.0.2.1")}
	for id := uint64(1); id <= 4; id++ {
		st.batch(id, 1, in...)
	}
	r := st.recv()
	if ref := r.GetRefusal(); ref.GetBatchId() != 4 || !strings.HasPrefix(ref.GetReason(), ReasonNoCredit) || r.GetCredit() != 0 {
		t.Fatalf("report %v, want a no-credit refusal of batch 4 with credit 0", r)
	}
	if n := h.svc.InFlight(); n != 3 {
		t.Errorf("InFlight = %d, want 3", n)
	}
	eng.release()
	for range 3 {
		r := st.recv()
		checkResult(t, r, r.GetResult().GetBatchId(), 1, in, 1)
	}
	// The window is whole again: three more batches are accepted.
	for id := uint64(5); id <= 7; id++ {
		st.batch(id, 1, in...)
	}
	for range 3 {
		if r := st.recv(); r.GetResult() == nil {
			t.Fatalf("report %v, want a Result", r)
		}
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name   string
		term   int64
		addrs  [][]byte
		reason string
	}{
		{"five-byte address", 5, [][]byte{v4("192.0.2.1"), {1, 2, 3, 4, 5}}, ReasonMalformed},
		{"three-byte address", 5, [][]byte{{1, 2, 3}}, ReasonMalformed},
		{"empty batch", 5, nil, ReasonEmpty},
		{"too many addresses", 5, addrs(5), ReasonTooLarge},
		{"older term", 4, [][]byte{v4("192.0.2.1")}, ReasonStaleTerm},
		{"other term", 6, [][]byte{v4("192.0.2.1")}, ReasonTermMismatch},
	}
	h := start(t, Config{Capacity: 2, MaxBatch: 4})
	st, _ := h.open(t, 5)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.batch(uint64(100+i), tt.term, tt.addrs...)
			r := st.recv()
			ref := r.GetRefusal()
			if ref == nil || ref.GetBatchId() != uint64(100+i) || ref.GetAttempt() != uint32((100+i)%3) {
				t.Fatalf("report %v, want a refusal of batch %d", r, 100+i)
			}
			if !strings.HasPrefix(ref.GetReason(), tt.reason) {
				t.Errorf("reason %q, want %q", ref.GetReason(), tt.reason)
			}
			if r.GetCredit() != 1 {
				t.Errorf("credit %d, want 1 (the refused batch used a credit)", r.GetCredit())
			}
		})
	}
	// The refusals returned their credits: the window is still 2.
	in := [][]byte{v4("192.0.2.1")}
	st.batch(1, 5, in...)
	st.batch(2, 5, in...)
	for range 2 {
		r := st.recv()
		checkResult(t, r, r.GetResult().GetBatchId(), 5, in, 1)
	}
}

func TestStaleOpenRefused(t *testing.T) {
	h := start(t, Config{})
	a, _ := h.open(t, 5)
	b := h.stream(t)
	b.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "old", Term: 3}}})
	if code, got := b.recvErr(); code != codes.FailedPrecondition || len(got) != 0 {
		t.Fatalf("stale open: %s after %v, want FailedPrecondition and nothing else", code, got)
	}
	// The current session is unaffected.
	in := [][]byte{v4("192.0.2.3")}
	a.batch(1, 5, in...)
	checkResult(t, a.recv(), 1, 5, in, 1)
}

func TestNewerOpenSupersedes(t *testing.T) {
	for _, tt := range []struct {
		name      string
		oldTerm   int64
		newerTerm int64
	}{
		{"newer term", 5, 6},
		{"same term reconnects", 5, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eng := newGatedEngine()
			h := start(t, Config{Capacity: 2, Engine: eng})
			old, _ := h.open(t, tt.oldTerm)
			in := [][]byte{v4("192.0.2.5")}
			old.batch(1, tt.oldTerm, in...)
			testwait.For(t, testwait.Timeout, "batch in flight", func() bool { return h.svc.InFlight() == 1 })

			cur, ready := h.open(t, tt.newerTerm)
			if ready.GetCredit() != 2 {
				t.Errorf("new session credit %d, want 2", ready.GetCredit())
			}
			code, got := old.recvErr()
			if code != codes.FailedPrecondition || len(got) != 0 {
				t.Fatalf("old session ended with %s after %v, want FailedPrecondition and no result", code, got)
			}
			testwait.For(t, testwait.Timeout, "old batch dropped", func() bool { return h.svc.InFlight() == 0 })
			eng.release()
			cur.batch(2, tt.newerTerm, in...)
			checkResult(t, cur.recv(), 2, tt.newerTerm, in, 1)
		})
	}
}

func TestDrain(t *testing.T) {
	eng := newGatedEngine()
	h := start(t, Config{Capacity: 2, Engine: eng})
	st, _ := h.open(t, 9)
	in := [][]byte{v4("192.0.2.9")}
	st.batch(1, 9, in...)
	testwait.For(t, testwait.Timeout, "batch in flight", func() bool { return h.svc.InFlight() == 1 })

	h.svc.Drain()
	st.batch(2, 9, in...)
	r := st.recv()
	if ref := r.GetRefusal(); ref.GetBatchId() != 2 || ref.GetReason() != ReasonDraining || r.GetCredit() != 0 {
		t.Fatalf("report %v, want refusal of batch 2 with reason %q and credit 0", r, ReasonDraining)
	}

	idle := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		idle <- h.svc.WaitIdle(ctx)
	}()
	eng.release()
	checkResult(t, st.recv(), 1, 9, in, 0)
	if err := <-idle; err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}

	// A new session while draining gets no credit.
	_, ready := h.open(t, 10)
	if !ready.GetReady().GetDraining() || ready.GetCredit() != 0 {
		t.Errorf("Ready while draining = %v, want draining and credit 0", ready)
	}
}

// A Drain from the scheduler drains the service as Drain does, tells the
// owner through OnDrain, and the batch in flight is still answered.
func TestDrainMessage(t *testing.T) {
	eng := newGatedEngine()
	asked := make(chan string, 1)
	h := start(t, Config{Capacity: 2, Engine: eng, OnDrain: func(reason string) { asked <- reason }})
	st, _ := h.open(t, 3)
	in := [][]byte{v4("192.0.2.10")}
	st.batch(1, 3, in...)
	testwait.For(t, testwait.Timeout, "batch in flight", func() bool { return h.svc.InFlight() == 1 })

	st.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Drain{Drain: &styxv1.Drain{Reason: "host maintenance"}}})
	if got := <-asked; got != "host maintenance" {
		t.Fatalf("OnDrain(%q), want the reason sent", got)
	}
	if !h.svc.Draining() {
		t.Fatal("service not draining after a Drain message")
	}
	st.batch(2, 3, in...)
	if r := st.recv(); r.GetRefusal().GetReason() != ReasonDraining || r.GetCredit() != 0 {
		t.Fatalf("report %v, want refusal of batch 2 (draining, credit 0)", r)
	}
	eng.release()
	checkResult(t, st.recv(), 1, 3, in, 0)
}

func TestWaitIdleTimeout(t *testing.T) {
	eng := newGatedEngine()
	h := start(t, Config{Engine: eng})
	st, _ := h.open(t, 1)
	st.batch(1, 1, v4("192.0.2.1"))
	testwait.For(t, testwait.Timeout, "batch in flight", func() bool { return h.svc.InFlight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.svc.WaitIdle(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitIdle = %v, want deadline exceeded", err)
	}
}

func TestStreamBreakDropsWork(t *testing.T) {
	eng := newGatedEngine()
	h := start(t, Config{Engine: eng})
	st, _ := h.open(t, 1)
	st.batch(1, 1, v4("192.0.2.1"))
	st.batch(2, 1, v4("192.0.2.2"))
	testwait.For(t, testwait.Timeout, "batches in flight", func() bool { return h.svc.InFlight() == 2 })
	st.cancel()
	testwait.For(t, testwait.Timeout, "batches dropped", func() bool { return h.svc.InFlight() == 0 })
}

func TestHalfCloseAnswersThenEnds(t *testing.T) {
	h := start(t, Config{})
	st, _ := h.open(t, 2)
	in := addrs(10)
	st.batch(1, 2, in...)
	st.batch(2, 2, in...)
	if err := st.s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	code, got := st.recvErr()
	if code != codes.OK || len(got) != 2 {
		t.Fatalf("stream ended with %s after %d reports, want OK after 2", code, len(got))
	}
	for _, r := range got {
		checkResult(t, r, r.GetResult().GetBatchId(), 2, in, 1)
	}
}

func TestBatchDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	h := start(t, Config{BatchDelay: delay})
	st, _ := h.open(t, 1)
	in := [][]byte{v4("192.0.2.1")}
	st.batch(1, 1, in...)
	r := st.recv()
	checkResult(t, r, 1, 1, in, 1)
	if busy := time.Duration(r.GetResult().GetBusyNanos()); busy < delay {
		t.Errorf("busy %s, want at least the %s delay", busy, delay)
	}
}

func TestEnginePanicIsAnErrorVerdict(t *testing.T) {
	h := start(t, Config{})
	st, _ := h.open(t, 1)
	st.batch(1, 1, v4("192.0.2.1"), v4(poison.String()), v4("192.0.2.3"))
	vs := verdictsOf(t, st.recv().GetResult())
	if len(vs) != 3 {
		t.Fatalf("%d verdicts, want 3", len(vs))
	}
	if vs[1].GetError() == "" || vs[0].GetError() != "" || vs[2].GetError() != "" {
		t.Errorf("errors %q %q %q, want only the second set", vs[0].GetError(), vs[1].GetError(), vs[2].GetError())
	}
}

func TestProtocolErrors(t *testing.T) {
	h := start(t, Config{})
	st, _ := h.open(t, 1)
	st.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{Term: 1}}})
	if code, _ := st.recvErr(); code != codes.InvalidArgument {
		t.Errorf("second Open: %s, want InvalidArgument", code)
	}
}

func TestStopEndsSessions(t *testing.T) {
	svc, err := New(Config{WorkerID: "w", Capacity: 1, Engine: &fakeEngine{}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	styxv1.RegisterWorkerServiceServer(srv, svc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := make(chan error, 1)
	go func() { run <- svc.Run(ctx) }()
	wg.Go(func() { _ = srv.Serve(lis) })
	defer func() { srv.Stop(); wg.Wait() }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := &harness{svc: svc, client: styxv1.NewWorkerServiceClient(conn)}
	st, _ := h.open(t, 1)

	cancel()
	if code, _ := st.recvErr(); code != codes.Unavailable {
		t.Errorf("stream ended with %s, want Unavailable", code)
	}
	select {
	case <-run:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	// A new session after Run ended is refused.
	st2 := h.stream(t)
	st2.send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{Term: 2}}})
	if code, _ := st2.recvErr(); code != codes.Unavailable {
		t.Errorf("open after stop: %s, want Unavailable", code)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{WorkerID: "w", Capacity: 1, Engine: raven.Nop{}}
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"valid", func(*Config) {}, true},
		{"no id", func(c *Config) { c.WorkerID = "" }, false},
		{"no capacity", func(c *Config) { c.Capacity = 0 }, false},
		{"no engine", func(c *Config) { c.Engine = nil }, false},
		{"negative workers", func(c *Config) { c.Workers = -1 }, false},
		{"negative max batch", func(c *Config) { c.MaxBatch = -1 }, false},
		{"negative delay", func(c *Config) { c.BatchDelay = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// versioned answers like the fake engine under another model version.
type versioned struct{ version string }

func (v versioned) Examine(a netip.Addr) verdict.Verdict { return fakeVerdict(a) }
func (v versioned) ModelVersion() string                 { return v.version }

// TestSetEngineBetweenBatches: a model swapped while a batch is examined
// does not touch that batch; the batches accepted afterwards use it.
func TestSetEngineBetweenBatches(t *testing.T) {
	eng := newGatedEngine()
	h := start(t, Config{Capacity: 2, Engine: eng})
	st, _ := h.open(t, 1)
	in := [][]byte{v4("192.0.2.1"), v4("192.0.2.2")}
	st.batch(1, 1, in...)
	testwait.For(t, testwait.Timeout, "batch 1 in flight", func() bool { return h.svc.InFlight() == 1 })
	h.svc.SetEngine(versioned{"model-v2"})
	if h.svc.ModelVersion() != "model-v2" {
		t.Fatalf("ModelVersion %s after SetEngine", h.svc.ModelVersion())
	}
	eng.release()
	first := st.recv().GetResult()
	st.batch(2, 1, in...)
	second := st.recv().GetResult()
	for _, v := range verdictsOf(t, first) {
		if v.ModelVersion != fakeVersion {
			t.Fatalf("batch 1 verdict names %s, want the engine it started with (%s)", v.ModelVersion, fakeVersion)
		}
	}
	for _, v := range verdictsOf(t, second) {
		if v.ModelVersion != "model-v2" {
			t.Fatalf("batch 2 verdict names %s, want model-v2", v.ModelVersion)
		}
	}
}
