package grpcstop

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// serve starts a gRPC server with the health service on 127.0.0.1:0 and
// returns it with a client connection to it.
func serve(t *testing.T) (*grpc.Server, healthpb.HealthClient) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, healthpb.NewHealthClient(conn)
}

func TestGracefulWithNothingRunning(t *testing.T) {
	srv, client := serve(t)
	if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !Graceful(srv, time.Minute) {
		t.Fatal("Graceful = false with no call running")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Graceful took %s with no call running", took)
	}
}

// A Watch stream never ends by itself: GracefulStop waits for it until
// the deadline, then Stop cuts it.
func TestGracefulStopsAfterTheDeadline(t *testing.T) {
	srv, client := serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is up on the server
		t.Fatal(err)
	}
	const timeout = 50 * time.Millisecond
	start := time.Now()
	if Graceful(srv, timeout) {
		t.Fatal("Graceful = true with a stream that never ends")
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("Graceful gave up after %s, before its %s deadline", took, timeout)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after Stop: %v, want Unavailable", err)
	}
}

// fakeServer's GracefulStop returns only after Stop, like a server with a
// stream that never ends.
type fakeServer struct {
	stopped chan struct{}
	stops   int
}

func (f *fakeServer) GracefulStop() { <-f.stopped }
func (f *fakeServer) Stop()         { f.stops++; close(f.stopped) }

func TestGracefulCallsStopOnce(t *testing.T) {
	f := &fakeServer{stopped: make(chan struct{})}
	if Graceful(f, time.Millisecond) {
		t.Fatal("Graceful = true")
	}
	if f.stops != 1 {
		t.Fatalf("Stop called %d times", f.stops)
	}
}
