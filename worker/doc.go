// Package worker is the styx-worker role: the Raven post-processing server.
// A Worker serves styx.v1.WorkerService (plus gRPC health and reflection),
// registers itself under /styx/workers/<id> on an etcd lease, and examines
// the batches the STYX leader sends it with a raven.Engine, within the
// credits it granted. Unless Config.AttackFeed is off, it also follows the
// verdict log (NATS JetStream at Config.NATSURL, pkg/verdictlog) from the
// start of its retention: its attack reports go into an in-memory
// attacks.Table (AttackTable), which an engine implementing
// attacks.HistoryUser reads. With Config.History (on by default) and a
// location database, it folds the log's verdicts too into a history.Table
// (History) that the schema 2 models it loads read. Both tables are in
// memory and rebuilt from the log at every start; LogStatus and the
// styx_worker_log_* metrics say how far behind the log the worker is.
// With Config.Probe (off by default), every engine it runs is wrapped in a
// raven.EvidenceStage that runs the open-proxy probe (probe.go) on the
// addresses the engine does not already call proxies.
//
// Several Workers can run in one process, each with its own listener,
// registration and metrics registry; only NUMA pinning is process-wide, so
// in-process clusters leave NUMANode empty:
//
//	cfg := worker.DefaultConfig()
//	cfg.Etcd = cli // or EtcdEndpoints
//	cfg.EngineName = worker.EngineNop
//	w, err := worker.New(cfg, log)
//	if err != nil {
//		return err
//	}
//	go w.Run(ctx)
//	<-w.Ready()
//	addr := w.Addr() // 127.0.0.1:<port>
//
// Supervise is the --numa-node=all mode: one pinned child process per NUMA
// node.
package worker
