// Package lookupcmd implements `styx-node lookup`: it looks IP addresses up
// in the location database (package locdb) and prints one line per address,
// readable or JSON. Run is the whole command; main only forwards to it.
package lookupcmd
