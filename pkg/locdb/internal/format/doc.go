// Package format holds the on-disk constants of the location database
// (format version 1) shared by the reader in package locdb and the fixture
// writer in package locdbtest, and the one rule both must agree on: which
// bytes the signature covers.
package format
