// Package cli is the styx-scheduler command line: `serve` (the default) runs
// a scheduler, `status` prints the fleet and pool from a running one, and
// `fleet` (workers, pool, drain) operates the worker fleet through any
// scheduler.
package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/healthcheck"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/pkiflag"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
	"github.com/styx-inference/styx/scheduler/internal/pool"
)

const usage = `styx-scheduler: the STYX scheduler.

Usage:
  styx-scheduler [serve] [flags]     run a scheduler (several may run; one leads)
  styx-scheduler status [flags]      print the fleet and the pool of a running scheduler
  styx-scheduler healthcheck [flags] exit 0 when the scheduler at --http-addr answers /healthz
  styx-scheduler fleet workers       list the workers (through any scheduler)
  styx-scheduler fleet pool          print the leader's pool
  styx-scheduler fleet drain         drain workers or a host before taking them away

Run 'styx-scheduler serve -h', 'styx-scheduler status -h' or
'styx-scheduler fleet -h' for the flags and exit statuses.`

// Main runs the command and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stderr)
	case "status":
		return status(ctx, args, stdout, stderr)
	case "healthcheck":
		return healthcheck.Main("styx-scheduler", args, scheduler.DefaultConfig().HTTPAddr, "/healthz", stderr)
	case "fleet":
		return fleet(ctx, args, stdout, stderr)
	case "help":
		fmt.Fprintln(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s\n", cmd, usage)
	return 2
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	d := scheduler.DefaultConfig()
	fs := flag.NewFlagSet("styx-scheduler serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", scheduler.DefaultID(), "scheduler id (unique in the cluster)")
	etcd := fs.String("etcd-endpoints", strings.Join(d.EtcdEndpoints, ","), "etcd endpoints, comma-separated")
	fs.StringVar(&d.GRPCAddr, "grpc-addr", d.GRPCAddr, "gRPC listen address (cluster nodes' Submit streams and attack reports, admin; the leader dials the workers)")
	fs.StringVar(&d.HTTPAddr, "http-addr", d.HTTPAddr, "HTTP listen address (visualiser at /, status page /status, /api/status, /metrics, /healthz)")
	fs.StringVar(&d.HTTPToken, "http-token", "", "when set, every HTTP route but /healthz needs this token: \"Authorization: Bearer <token>\", or open the visualiser once with ?token=<token> (sets an HttpOnly cookie); prefer STYX_HTTP_TOKEN to keep it out of the process list")
	fs.StringVar(&d.AdvertiseAddr, "advertise-addr", "", "gRPC address others dial (default: the bound gRPC address, the host name replacing an unspecified IP)")
	fs.DurationVar(&d.LeaseTTL, "lease-ttl", d.LeaseTTL, "election lease TTL: a dead leader is replaced within about this long")
	fs.IntVar(&d.BatchSize, "batch-size", d.BatchSize, "most addresses per batch")
	fs.DurationVar(&d.BatchInterval, "batch-interval", d.BatchInterval, "longest a partial batch waits for more addresses")
	fs.IntVar(&d.MaxPending, "max-pending", d.MaxPending, "most addresses waiting in the pool (memory bound)")
	fs.DurationVar(&d.MaxAge, "max-age", d.MaxAge, "a sighting older than this expires with a notice")
	fs.DurationVar(&d.DedupWindow, "dedup-window", d.DedupWindow, "a verdict answers repeated sightings of its address for this long")
	fs.IntVar(&d.MaxRecent, "recent-max", d.MaxRecent, "verdicts the dedup window holds at most, whatever the rate (about 65 bytes each; 0: no window); when full the oldest goes, and its address is examined again when sighted")
	fs.StringVar(&d.NATSURL, "nats-url", d.NATSURL, "the verdict log's NATS JetStream servers, comma-separated nats:// URLs (empty: no log, verdicts reach only the nodes that asked)")
	fs.DurationVar(&d.LogPolicy.CleanRetention, "clean-retention", d.LogPolicy.CleanRetention, "the log keeps verdicts that found no proxy this long")
	fs.DurationVar(&d.LogPolicy.ProxyRetention, "proxy-retention", d.LogPolicy.ProxyRetention, "the log keeps proxy verdicts and attack reports this long")
	fs.IntVar(&d.LogPolicy.Replicas, "log-replicas", d.LogPolicy.Replicas, "replicas of each log stream (3 on a 3-server JetStream cluster)")
	fs.IntVar(&d.MaxFailures, "max-failures", d.MaxFailures, "worker failures a batch may suffer before it is split to isolate a poison address")
	shed := fs.String("shed", "sample:5", "shedding policy when the fleet cannot keep up: sample:N (admit 1 in N new addresses once half full), newest, oldest; /styx/config/shedding overrides it live")
	fs.StringVar(&d.HTTPSAddr, "https-addr", "", "also serve the HTTP routes over HTTPS here, with the --pki-dir certificate (empty: no HTTPS)")
	fs.DurationVar(&d.MaxClockSkew, "max-clock-skew", d.MaxClockSkew, "a worker result holding a verdict inferred later than now plus this is refused and counted")
	var trust pkiflag.Flags
	trust.Register(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = envflag.Usage(fs, "STYX", "styx-scheduler serve [flags]\n\nRuns a STYX scheduler: campaigns for leadership in etcd; the leader watches /styx/workers/,\ndials every worker, hands out batches of the addresses cluster nodes stream to it, and\npublishes every verdict and attack report to the verdict log (NATS JetStream).")
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return 2
	}
	d.ID = *id
	d.EtcdEndpoints = strings.Split(*etcd, ",")
	p, err := ParsePolicy(*shed)
	if err != nil {
		fmt.Fprintf(stderr, "-shed: %v\n", err)
		return 2
	}
	d.Shed = p
	log, err := logging.New(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "-log-level: %v\n", err)
		return 2
	}
	if d.PKI, err = trust.Load(log); err != nil {
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return 2
	}
	s, err := scheduler.New(d, log)
	if err != nil {
		fmt.Fprintf(stderr, "config: %v\n", err)
		return 2
	}
	if err := s.Run(ctx); err != nil {
		log.Error().Err(err).Msg("scheduler stopped")
		return 1
	}
	return 0
}

// ParsePolicy parses "sample:N", "newest" or "oldest".
func ParsePolicy(s string) (pool.Policy, error) {
	mode, arg, _ := strings.Cut(s, ":")
	p := pool.Policy{Mode: mode}
	if mode == pool.ShedSample {
		if _, err := fmt.Sscanf(arg, "%d", &p.SampleN); err != nil {
			return p, fmt.Errorf("sample needs N, e.g. sample:5")
		}
	}
	return p, p.Validate()
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("styx-scheduler status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:7070", "scheduler gRPC address")
	asJSON := fs.Bool("json", false, "print JSON")
	var trust pkiflag.Flags
	trust.Register(fs)
	fs.Usage = envflag.Usage(fs, "STYX", "styx-scheduler status [flags]\n\nPrints the workers and the pool as the scheduler at -addr sees them.")
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return 2
	}
	creds, err := adminCreds(&trust)
	if err != nil {
		fmt.Fprintln(stderr, "styx-scheduler status:", err)
		return 2
	}
	conn, err := grpc.NewClient(*addr, creds)
	if err != nil {
		fmt.Fprintf(stderr, "dial %s: %v\n", *addr, err)
		return 1
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := styxv1.NewAdminServiceClient(conn).Status(cctx, &styxv1.StatusRequest{})
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return 1
	}
	if *asJSON {
		b, _ := protojson.Marshal(st)
		var v any
		_ = json.Unmarshal(b, &v)
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	fmt.Fprintf(stdout, "scheduler %s leader=%v term=%d leader_id=%s\n", st.SchedulerId, st.Leader, st.Term, st.LeaderId)
	if p := st.Pool; p != nil {
		fmt.Fprintf(stdout, "pool: pending=%d in_flight=%d oldest=%dms received=%d examined=%d dedup=%d shed=%d expired=%d reassigned=%d coverage=%.1f%% policy=%s\n",
			p.Pending, p.InFlight, p.OldestAgeMillis, p.Received, p.Examined, p.Deduplicated, p.Shed, p.Expired, p.Reassigned, 100*p.Coverage, p.ShedPolicy)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tNUMA\tCPUS\tSTATE\tCAPACITY\tCREDITS\tIN FLIGHT\tBATCHES\tADDRESSES\tMODEL")
	for _, w := range st.Workers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", w.WorkerId, w.Host, w.NumaNode, w.Cpus, w.State, w.Capacity, w.Credits, w.InFlight, w.BatchesDone, w.AddressesDone, w.ModelVersion)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "nodes: %s\n", strings.Join(st.Nodes, ", "))
	return 0
}
