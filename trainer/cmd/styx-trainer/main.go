// Command styx-trainer will build, evaluate and publish Raven models. It is
// not implemented yet: workers and cluster nodes run the transparent scoring
// rule of pkg/raven (anonymous-proxy flag, drop flag, hosting-like AS).
package main

import (
	"fmt"
	"os"
)

const usage = `styx-trainer: builds, evaluates and publishes Raven models.

Not implemented yet. Until it is, every worker and cluster node runs the
transparent scoring rule (engine "rule"): anonymous-proxy networks are
anonymisers, drop networks are hostile, hosting-like ASes raise the risk.`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help") {
		fmt.Println(usage)
		return
	}
	fmt.Fprintln(os.Stderr, usage)
	os.Exit(2)
}
