// Package importcmd is "styx-node import-attacks": it reads attack reports
// from honeypot exports or log extracts (CSV "address,time,kind" or JSON
// objects, one per line, as pkg/attacks.Scanner reads them), checks every
// line locally, posts the valid reports to a node's POST /v2/attacks in
// chunks, shows progress, and exits non-zero when a line was rejected or a
// request failed. Run -h for the flags and exit statuses.
package importcmd
