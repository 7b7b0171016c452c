// Package scheduler is STYX itself: the process that campaigns for
// leadership in etcd and, while it leads, runs a coordinator that hands
// batches of addresses to the worker fleet and routes verdicts back to the
// cluster nodes. Followers serve the admin API and point nodes to the
// leader. See ARCHITECTURE.md for the whole picture.
package scheduler
