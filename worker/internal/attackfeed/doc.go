// Package attackfeed keeps a worker's attack table filled: it finds the
// STYX leader through etcd (pkg/leader), follows its feed with
// attacks_only set, and adds every attack report to an attacks.Table that
// the engine reads (attacks.History). The table lives in memory: a worker
// starts empty and follows from "now"; within a term it resumes from the
// last revision it saw, and when that revision has left the leader's ring
// (or a new leader took over) it follows from "now" again and counts the
// gap.
//
// With Config.History (the worker's --history, on by default) it follows
// the whole feed instead, verdicts included, and folds every event into a
// history.Table in revision order, which adds the attack reports to the
// attack table on the way: the per-bucket and per-AS statistics of Raven's
// feature schema 2. Every worker that follows the same feed from the same
// revision then holds the same statistics.
package attackfeed
