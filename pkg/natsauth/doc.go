// Package natsauth puts STYX's identities on the verdict log's NATS
// server: clients and cluster routes connect over mutual TLS with
// certificates of the cluster's CA, and each client gets the NATS
// permissions of its role (Permissions). Only schedulers publish verdicts
// and manage the streams; nodes and workers read the streams through
// ordered consumers; admins may do anything; every other role is refused.
// Routes between servers accept nats identities only.
//
// Refusals (a failed handshake, a role not allowed, a publish or
// subscription outside the role's permissions) are logged and counted:
//
//	src, _ := pki.Load(dir, log)      // the server's own identity, role nats
//	auth, _ := natsauth.New(src, log)
//	opts := &server.Options{JetStream: true, StoreDir: dir}
//	auth.Configure(opts)
//	s, _ := server.NewServer(opts)
//	auth.SetLogger(s, nil, false, false, false) // counts what nats-server only logs
//	go s.Start()
//
// The TLS configurations read the certificate and the CA from src on every
// handshake, so a renewed certificate or CA is used without a restart. A
// client is disconnected when its certificate expires, and reconnects with
// its renewed one.
package natsauth
