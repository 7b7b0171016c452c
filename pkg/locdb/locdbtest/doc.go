// Package locdbtest builds location database files for tests: a Database
// value lists countries, AS names and networks (plus optional dead-end trie
// paths and signatures) and Bytes or WriteFile lays them out in format
// version 1, readable by package locdb and by the reference tool.
//
// It also runs the reference tool (`location`, from the distribution's
// `location` package) over many addresses and parses its answers, so tests
// can cross-check package locdb against it; see ReferenceLookup.
package locdbtest
