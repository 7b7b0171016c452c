// Package integration holds the tests that run STYX's parts together: in
// process (embedded etcd, real gRPC on 127.0.0.1:0, real workers and cluster
// nodes) and as processes (the built binaries, killed and stopped), and the
// end-to-end benchmark that make bench runs.
package integration
