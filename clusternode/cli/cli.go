package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/clusternode/internal/exportcmd"
	"github.com/styx-inference/styx/clusternode/internal/importcmd"
	"github.com/styx-inference/styx/clusternode/internal/lookupcmd"
	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/healthcheck"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/pkiflag"
)

const usage = `usage: styx-node [serve] [flags]
       styx-node lookup [flags] ADDR...
       styx-node import-attacks [flags] FILE...
       styx-node export-verdicts [--data-dir DIR] [--probe-confirmed] [--out FILE|-]
       styx-node healthcheck [--http-addr A] [--timeout D]

serve           answer proxy queries over HTTP and stream newly seen addresses to STYX
lookup          look addresses up in the location database ("styx-node lookup -h")
import-attacks  post attack reports from CSV or JSON-lines files to a node ("styx-node import-attacks -h")
export-verdicts write the stored verdicts as a labels file for styx-trainer --labels ("styx-node export-verdicts -h")
healthcheck     exit 0 when the node at --http-addr (or STYX_HTTP_ADDR) answers /healthz, for container health checks`

// Main runs the command and returns its exit status; import-attacks reads
// the file "-" from stdin.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr)
	case "lookup":
		return lookupcmd.Run(ctx, args, stdout, stderr)
	case "import-attacks":
		return importcmd.Run(ctx, args, stdin, stdout, stderr)
	case "export-verdicts":
		return exportcmd.Run(ctx, args, stdout, stderr)
	case "healthcheck":
		return healthcheck.Main("styx-node", args, clusternode.DefaultConfig().HTTPAddr, "/healthz", stderr)
	case "help":
		fmt.Fprintln(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "styx-node: unknown command %q\n%s\n", cmd, usage)
	return 2
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	cfg := clusternode.DefaultConfig()
	fs := flag.NewFlagSet("styx-node serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("etcd-endpoints", strings.Join(cfg.EtcdEndpoints, ","), "etcd client endpoints, comma separated")
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "the verdict log's NATS JetStream servers, comma-separated nats:// URLs; the node follows the log into its store (\"\": no log, only the verdicts of its own sightings are stored)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "query API listen address (host:port; port 0 picks one)")
	fs.StringVar(&cfg.ID, "id", "", "node id, unique in the cluster (default <host>-<http port>)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the node's verdict store ("+clusternode.StoreFile+")")
	fs.StringVar(&cfg.DBPath, "db", cfg.DBPath, "location database file")
	fs.StringVar(&cfg.DBKeyPath, "db-key", "", "public key the location database is signed with (default the system's)")
	fs.BoolVar(&cfg.SkipVerify, "skip-verify", false, "do not verify the location database signature")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "registration lease TTL (whole seconds, at least 1s)")
	fs.DurationVar(&cfg.DedupWindow, "dedup-window", cfg.DedupWindow, "an address seen again within this window is not streamed again (0: stream every query)")
	fs.IntVar(&cfg.DedupMax, "dedup-max", cfg.DedupMax, "addresses the dedup window remembers at most")
	fs.IntVar(&cfg.MaxPending, "max-pending", cfg.MaxPending, "sightings streamed and awaiting an outcome at most; beyond, new ones are not submitted (counted as not_submitted)")
	fs.IntVar(&cfg.BatchSize, "batch-size", cfg.BatchSize, "sightings per batch at most (the leader may lower it)")
	fs.DurationVar(&cfg.BatchInterval, "batch-interval", cfg.BatchInterval, "longest wait before a partial batch is sent")
	fs.IntVar(&cfg.MaxAddresses, "max-addresses", cfg.MaxAddresses, "addresses per POST query at most")
	fs.Int64Var(&cfg.MaxBody, "max-body", cfg.MaxBody, "bytes per POST query body at most")
	fs.BoolVar(&cfg.FollowModels, "follow-models", cfg.FollowModels, "answer queries without a stored verdict with the model /styx/models/current names, swapped live (the rule until one is published; --follow-models=false: the rule only)")
	fs.BoolVar(&cfg.History, "history", cfg.History, "with --follow-models, keep a history table for schema 2 models (per-address attacks, per-/24 (/48) and per-AS verdict, proxy and attack counts), filled from the store at start, then from every verdict and attack report the store takes (--history=false: schema 2 models see a zero history block)")
	fs.IntVar(&cfg.HistoryMax, "history-max", cfg.HistoryMax, "addresses the history holds at most (the ones updated longest ago go first, with their share of their bucket's and AS's statistics; at start, the newest stored verdicts and attack histories)")
	fs.StringVar(&cfg.AttackToken, "attack-token", "", "bearer token that POST /v2/attacks requires, at least 16 bytes (\"\": attack reports disabled); prefer STYX_ATTACK_TOKEN, a flag shows in the process list")
	fs.Int64Var(&cfg.AttackMaxBody, "attack-max-body", cfg.AttackMaxBody, "bytes per POST /v2/attacks body at most")
	fs.IntVar(&cfg.AttackMaxReports, "attack-max-reports", cfg.AttackMaxReports, "report lines per POST /v2/attacks request at most")
	fs.IntVar(&cfg.AttackEvents, "attack-events", cfg.AttackEvents, "attack reports kept per address (the counts per kind cover every report)")
	fs.IntVar(&cfg.AttackOutboxMax, "attack-outbox-max", cfg.AttackOutboxMax, "attack reports waiting to be forwarded to the leader at most; beyond, POST /v2/attacks answers 503")
	fs.DurationVar(&cfg.CleanRetention, "clean-retention", cfg.CleanRetention, "the store keeps verdicts that found no proxy this long from their inference time, and last-seen times of addresses without a verdict (the verdict log's policy; swept every minute)")
	fs.DurationVar(&cfg.ProxyRetention, "proxy-retention", cfg.ProxyRetention, "the store keeps proxy verdicts this long from their inference time, and attack histories from their newest report (at least --clean-retention)")
	fs.IntVar(&cfg.ThreatsRecent, "threats-recent", cfg.ThreatsRecent, "newest proxy verdicts kept in memory for the public threats page (GET /threats, /threats.json), which shows a random sample of them (0: page off)")
	fs.DurationVar(&cfg.LogStallAfter, "log-stall-after", 30*time.Second, "the verdict log follower is stalled (error log, styx_node_log_stalled 1, /healthz 503) when connected and behind but applying nothing this long; a JetStream stream leader failover can hold it 10 to 20 s")
	fs.StringVar(&cfg.HTTPSAddr, "https-addr", "", "also serve the query API over HTTPS here, with the --pki-dir certificate (empty: HTTP only)")
	var trust pkiflag.Flags
	trust.Register(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = envflag.Usage(fs, "STYX", "usage: styx-node [serve] [flags]\n       styx-node lookup [--json] [--db PATH] ADDR...   (see styx-node lookup -h)\n       styx-node import-attacks [--node URL] [--token T] FILE...   (see styx-node import-attacks -h)\n       styx-node export-verdicts [--data-dir DIR] [--probe-confirmed] [--out FILE|-]   (see styx-node export-verdicts -h)\n       styx-node healthcheck [--http-addr A] [--timeout D]\n\nAnswers proxy queries over HTTP (GET /v2/{ip}, POST /v2/) and streams newly seen addresses to STYX;\nfollows the verdict log (--nats-url) into its store.\nWith --attack-token, accepts attack reports (POST /v2/attacks) and shares them with every node and worker.\nGET /threats is a public page (and /threats.json its data) listing a random sample of the addresses post-processing most recently found to be proxies.")
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "styx-node:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "styx-node: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.EtcdEndpoints = splitList(*endpoints)

	log, err := logging.New(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "styx-node: log level:", err)
		return 2
	}
	if cfg.PKI, err = trust.Load(log); err != nil {
		fmt.Fprintln(stderr, "styx-node:", err)
		return 2
	}
	n, err := clusternode.New(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("start node")
		return 1
	}
	if err := n.Run(ctx); err != nil {
		log.Error().Err(err).Msg("node failed")
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
