package worker

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// TestWorkServiceAcceptsOnlyTheScheduler: over mutual TLS a worker takes
// a Work stream from a scheduler's certificate only. A node, an admin, a
// plaintext client and a foreign CA's scheduler are refused and counted.
// The worker's id comes from its certificate.
func TestWorkServiceAcceptsOnlyTheScheduler(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	cfg := testConfig(cli)
	cfg.PKI = p.Source(t, pki.Worker, "w-tls")
	cfg.AttackFeed = false
	r := startWorker(t, cfg)
	if got := r.w.ID(); got != "w-tls" {
		t.Errorf("worker id %q, want the certificate's w-tls", got)
	}
	work := func(dial grpc.DialOption) error {
		conn, err := grpc.NewClient(r.w.Addr(), dial)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := styxv1.NewWorkerServiceClient(conn).Work(ctx)
		if err != nil {
			return err
		}
		// A refused stream may end before the send: io.EOF there, and the
		// status comes with the receive.
		if err := s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "s", Term: 1}}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		m, err := s.Recv()
		if err != nil {
			return err
		}
		if m.GetReady() == nil {
			t.Errorf("open answered %v, want ready", m)
		}
		return nil
	}
	expect := pki.WorkerPolicy("w-tls")
	for _, tc := range []struct {
		name string
		dial grpc.DialOption
		want codes.Code
	}{
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable},
		{"node", grpcauth.DialOption(p.Source(t, pki.Node, "n1"), expect), codes.PermissionDenied},
		{"admin", grpcauth.DialOption(p.Source(t, pki.Admin, "ops"), expect), codes.PermissionDenied},
		{"foreign scheduler", grpcauth.DialOption(foreign.Source(t, pki.Scheduler, "s1"), nil), codes.Unavailable},
		{"scheduler", grpcauth.DialOption(p.Source(t, pki.Scheduler, "s1"), expect), codes.OK},
	} {
		if err := work(tc.dial); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	// The server counts a failed handshake when its side of it ends, which
	// may be after the client has its error.
	testwait.For(t, 10*time.Second, "the refusals counted: role 2, handshake at least 2", func() bool {
		got := r.w.Guard().Refused()
		return got[grpcauth.ReasonRole] == 2 && got[grpcauth.ReasonHandshake] >= 2
	})
}

// TestWorkerIDMustMatchCertificate: a worker refuses to start under an id
// its certificate does not prove (the scheduler would give it no work).
func TestWorkerIDMustMatchCertificate(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	cfg := testConfig(cli)
	cfg.PKI = p.Source(t, pki.Worker, "w1")
	cfg.ID = "w10"
	cfg.AttackFeed = false
	w, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(t.Context()); err == nil {
		t.Fatal("a worker ran as w10 with the certificate of w1")
	}
}
