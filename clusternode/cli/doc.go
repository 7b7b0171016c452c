// Package cli is the styx-node command line: `serve` (the default) runs a
// cluster node; `lookup`, `import-attacks` and `export-verdicts` are the
// operator's tools around it, and `healthcheck` is for container health
// checks. Every serve flag may also be set as STYX_<FLAG>.
package cli
