// Package childproc holds what STYX's supervisors (the worker's
// --numa-node=all mode and the all-in-one dev cluster) need from the OS to
// keep their child processes from outliving them.
package childproc
