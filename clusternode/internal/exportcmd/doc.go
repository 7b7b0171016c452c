// Package exportcmd is "styx-node export-verdicts": it reads a node's
// verdict store read-only and writes its verdicts as the labels file
// styx-trainer's --labels reads ("address,label" lines, see
// trainer/internal/labels), optionally only the verdicts an open-proxy
// probe confirmed. Run -h for the flags and exit statuses.
package exportcmd
