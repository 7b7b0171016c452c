// Package cli is the styx-worker command line: its flags (each with a
// STYX_<FLAG> environment override), the logger, and the choice between
// one worker (worker.Run) and one pinned child per NUMA node
// (worker.Supervise).
package cli
