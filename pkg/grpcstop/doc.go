// Package grpcstop ends a gRPC server the way every role's shutdown does:
// GracefulStop, so that running calls finish, and Stop once a deadline has
// passed, so that one stream that never ends cannot hold the process.
package grpcstop
