package grpcstop

import "time"

// Server is what Graceful stops; *grpc.Server is one.
type Server interface {
	GracefulStop()
	Stop()
}

// Graceful calls srv.GracefulStop and, if that has not returned within
// timeout, srv.Stop, which closes the remaining connections and makes
// GracefulStop return. It returns once GracefulStop has, reporting whether
// that happened within timeout.
func Graceful(srv Server, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.GracefulStop()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		srv.Stop()
		<-done
		return false
	}
}
