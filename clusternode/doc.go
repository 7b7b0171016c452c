// Package clusternode is the STYX cluster node (styx-node): it answers
// "is this IP a proxy?" over HTTP at once, from its durable verdict store or
// its local real-time engine, and streams every newly seen address to the
// STYX leader, applying the verdicts that come back to the store. It also
// follows the verdict log (NATS JetStream, pkg/verdictlog) into the store,
// so that it holds every verdict and attack report STYX makes, each applied
// exactly once (the store keeps each stream's cursor in the transaction
// that applies its messages).
//
//	n, err := clusternode.New(cfg, log)
//	if err != nil {
//		return err
//	}
//	go n.Run(ctx)
//	<-n.Ready()
//	http.Get("http://" + n.HTTPAddr() + "/v2/8.8.8.8?asn=1")
//
// Parts (each under internal/): store (bbolt: verdicts, last-seen times,
// log cursors, sighting id high-water mark), api (the proxycheck-style
// HTTP API, /healthz, /metrics, the public threats page), uplink (dedup
// window, pending table, the Submit stream to the leader, and ApplyLog, the
// Apply of the node's verdictlog.Follower), threats
// (the newest proxy verdicts, fed by the store as verdicts land, for the
// threats page), nodehistory (the history table the real-time client's
// schema 2 models read, fed by the store as verdicts and attack reports
// land). The node registers itself under
// /styx/nodes/<id> on a lease for as long as it runs.
//
// /healthz shows the log follower (connected, stalled, and per stream the
// sequence applied, the head and the lag) and answers 503 while it is
// stalled: connected and behind, but applying nothing.
//
// Shutdown order (Run, when its context ends): stop accepting HTTP
// (graceful, bounded), flush and stop the uplink, stop the log follower and
// close the NATS connection, revoke the registration lease, close the
// store.
//
// For tests, Submit injects sightings without HTTP, Stats returns the
// uplink's counters and the log follower's state, and Config.OnOutcome is
// called once per resolved sighting.
package clusternode
