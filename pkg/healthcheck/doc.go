// Package healthcheck is the "healthcheck" subcommand of the STYX binaries
// that serve HTTP (styx-scheduler, styx-node) and of the compose etcd: it
// asks the process in the same container for its health endpoint over
// loopback and turns the answer into an exit status. Images built FROM
// scratch have no shell or curl, so container health checks run the binary
// itself:
//
//	healthcheck: {test: ["CMD", "/styx-node", "healthcheck"]}
//
// The listen address comes from --http-addr or, as for the server, from
// STYX_HTTP_ADDR, so a check in the server's environment finds the server
// without repeating its address.
package healthcheck
