// Package attackfeed keeps a worker's attack table filled: it finds the
// STYX leader through etcd (pkg/leader), follows its feed with
// attacks_only set, and adds every attack report to an attacks.Table that
// the engine reads (attacks.History). The table lives in memory: a worker
// starts empty and follows from "now"; within a term it resumes from the
// last revision it saw, and when that revision has left the leader's ring
// (or a new leader took over) it follows from "now" again and counts the
// gap.
package attackfeed
