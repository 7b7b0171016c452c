// Package attackfeed keeps a worker's attack table, and its history table,
// filled from the verdict log (NATS JetStream, pkg/verdictlog). It runs a
// verdictlog.Follower whose cursor is always 0: the tables live in memory,
// so every start replays what the streams' retention holds (proxy verdicts
// and attack reports 30 days, clean verdicts 1 hour by default) and a
// restarted worker rebuilds the tables it had. The engine reads the attack
// table (attacks.History).
//
// With Config.History (the worker's --history, on by default with a
// location database) it reads both streams and folds every message into a
// history.Table with ApplyBatch, which adds the attack reports to the attack
// table on the way: the per-bucket and per-AS statistics of Raven's
// feature schema 2. The two streams are read side by side, so workers fold
// their messages in different interleavings; the history's fold does not
// depend on it (the newest verdict of an address is held), so a worker that
// replayed the log holds the same table as a peer that followed it live
// (retention aside, and while neither table is full). Without History it
// reads the proxy stream alone (attack reports share it with proxy
// verdicts, which it skips) and adds the reports to the attack table.
//
// The follower's connection, lag and stalls are exported as
// styx_worker_log_* (Follower.Register); the NATS connection is the
// caller's, opened with verdictlog.Connect, which retries in the
// background, so a worker starts while NATS is down.
package attackfeed
