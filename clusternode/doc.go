// Package clusternode is the STYX cluster node (styx-node): it answers
// "is this IP a proxy?" over HTTP at once, from its durable verdict store or
// its local real-time engine, and streams every newly seen address to the
// STYX leader, applying the verdicts that come back and the leader's verdict
// feed to the store.
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
// feed revision, sighting id high-water mark), api (the proxycheck-style
// HTTP API, /healthz, /metrics, the public threats page), uplink (dedup
// window, pending table, the Submit and Feed streams to the leader), threats
// (the newest proxy verdicts, fed by the store as verdicts land, for the
// threats page), nodehistory (the history table the real-time client's
// schema 2 models read, fed by the store as verdicts and attack reports
// land). The node registers itself under
// /styx/nodes/<id> on a lease for as long as it runs.
//
// Shutdown order (Run, when its context ends): stop accepting HTTP
// (graceful, bounded), flush and stop the uplink, revoke the registration
// lease, close the store.
//
// For tests, Submit injects sightings without HTTP, Stats returns the
// uplink's counters, and Config.OnOutcome is called once per resolved
// sighting.
package clusternode
