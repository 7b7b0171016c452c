package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pkiflag"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Exit statuses of the fleet commands.
const (
	exitOK       = 0
	exitFailed   = 1 // cannot connect, no leader, or the call failed
	exitUsage    = 2
	exitTimeout  = 3 // drain --wait: the workers had not left within --timeout
	exitNotFound = 4 // drain: no such worker, or no worker on the host
)

// fleetRPCTimeout bounds one call to the scheduler.
const fleetRPCTimeout = 5 * time.Second

// drainPoll is how often drain --wait asks the leader whether the workers
// have left.
const drainPoll = 200 * time.Millisecond

const fleetUsage = `styx-scheduler fleet: operate the worker fleet through a running scheduler.

Usage:
  styx-scheduler fleet workers [--addr A] [--json]
      list the workers the leader knows: id, host, NUMA node, CPUs, capacity,
      credits, batches in flight, load (in flight / capacity), throughput
      (addresses/s over about 10 s), answered batches, model version, state
  styx-scheduler fleet pool [--addr A] [--json]
      the leader's pool: pending addresses, in flight, oldest age, received,
      examined, deduplicated, shed, expired, reassigned, verdicts, coverage,
      shedding policy
  styx-scheduler fleet drain (--worker ID ... | --host HOST) [--wait] [--timeout D] [--reason R] [--addr A] [--json]
      drain workers before taking them away: the leader stops sending them
      batches at once and tells each to leave; a worker answers the batches
      it holds (for up to its --drain-timeout; the leader requeues any it
      gives back or still holds then), revokes its lease and exits with 0.
      --worker may be repeated; --host selects every worker of that host.
      --wait waits until every selected worker has left (its key is gone
      from etcd) and prints when each left; --timeout bounds the wait (2m).

--addr may name any scheduler (default 127.0.0.1:7070, or STYX_ADDR): a
standby forwards the call to the leader. --json prints JSON with the
protobuf field names (snake_case), zero values included.

Exit status:
  0  done (with --wait: every selected worker left)
  1  the scheduler cannot be reached, no leader is elected, or the call failed
  2  usage error
  3  drain --wait: some workers had not left within --timeout
  4  drain: no such worker, or no worker on that host (nothing was drained)`

func fleet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, fleetUsage)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stdout, fleetUsage)
		return exitOK
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "workers":
		return fleetWorkers(ctx, args, stdout, stderr)
	case "pool":
		return fleetPool(ctx, args, stdout, stderr)
	case "drain":
		return fleetDrain(ctx, args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "styx-scheduler fleet: unknown command %q\n\n%s\n", cmd, fleetUsage)
	return exitUsage
}

// exitText lists the exit statuses every fleet command shares.
const exitText = `Exit status:
  0  done
  1  the scheduler cannot be reached, no leader is elected, or the call failed
  2  usage error`

// fleetFlags are the flags every fleet command has.
type fleetFlags struct {
	fs     *flag.FlagSet
	addr   *string
	asJSON *bool
	trust  *pkiflag.Flags
}

func newFleetFlags(name, synopsis string, stderr io.Writer) fleetFlags {
	fs := flag.NewFlagSet("styx-scheduler fleet "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := fleetFlags{
		fs:     fs,
		addr:   fs.String("addr", "127.0.0.1:7070", "gRPC address of any scheduler (a standby forwards to the leader)"),
		asJSON: fs.Bool("json", false, "print JSON (protobuf field names, zero values included)"),
		trust:  &pkiflag.Flags{},
	}
	f.trust.Register(fs)
	fs.Usage = envflag.Usage(fs, "STYX", synopsis)
	return f
}

// parse parses args; it returns the exit status to stop with, or -1.
func (f fleetFlags) parse(args []string, stderr io.Writer) int {
	if err := envflag.Parse(f.fs, "STYX", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return exitUsage
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(stderr, "styx-scheduler %s: unexpected arguments %q\n", f.fs.Name(), f.fs.Args())
		return exitUsage
	}
	return -1
}

// admin is a client of the scheduler at addr.
type admin struct {
	addr string
	conn *grpc.ClientConn
	c    styxv1.AdminServiceClient
}

func dialAdmin(addr string, trust *pkiflag.Flags) (*admin, error) {
	creds, err := adminCreds(trust)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, creds)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the scheduler at %s: %w", addr, err)
	}
	return &admin{addr: addr, conn: conn, c: styxv1.NewAdminServiceClient(conn)}, nil
}

func (a *admin) close() { a.conn.Close() }

// adminCreds are the transport of an admin command: mutual TLS with an
// admin identity (--pki-dir), or plaintext with --insecure.
func adminCreds(trust *pkiflag.Flags) (grpc.DialOption, error) {
	src, err := trust.Load(zerolog.Nop())
	if err != nil {
		return nil, err
	}
	if src == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	if err := pkiflag.Require(src, pki.Admin); err != nil {
		return nil, fmt.Errorf("--pki-dir: %w (admin commands need an admin certificate)", err)
	}
	return grpcauth.DialOption(src, pki.AnyOf(pki.Scheduler)), nil
}

// status asks the leader (through the scheduler at addr) for its view.
func (a *admin) status(ctx context.Context) (*styxv1.StatusResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, fleetRPCTimeout)
	defer cancel()
	st, err := a.c.Status(cctx, &styxv1.StatusRequest{ViaLeader: true})
	if err != nil {
		return nil, a.explain(err)
	}
	if !st.Leader {
		return nil, fmt.Errorf("the scheduler at %s does not lead and knows no leader", a.addr)
	}
	return st, nil
}

// explain turns a call's error into a message for operators.
func (a *admin) explain(err error) error {
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return err
	}
	switch msg := st.Message(); {
	case st.Code() == codes.Unavailable && (strings.Contains(msg, "connection") || strings.Contains(msg, "transport")):
		return fmt.Errorf("cannot connect to the scheduler at %s: %s", a.addr, msg)
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("the scheduler at %s did not answer within %s", a.addr, fleetRPCTimeout)
	default:
		return fmt.Errorf("scheduler at %s: %s", a.addr, msg)
	}
}

// fetchStatus asks the scheduler at addr for the leader's status.
func fetchStatus(ctx context.Context, addr string, trust *pkiflag.Flags) (*styxv1.StatusResponse, error) {
	a, err := dialAdmin(addr, trust)
	if err != nil {
		return nil, err
	}
	defer a.close()
	return a.status(ctx)
}

// statusCommand parses a read-only fleet command's flags and fetches the
// leader's status; a code of 0 or more ends the command with it.
func statusCommand(ctx context.Context, name, usage string, args []string, stderr io.Writer) (fleetFlags, *styxv1.StatusResponse, int) {
	f := newFleetFlags(name, usage, stderr)
	if code := f.parse(args, stderr); code >= 0 {
		return f, nil, code
	}
	st, err := fetchStatus(ctx, *f.addr, f.trust)
	if err != nil {
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return f, nil, exitFailed
	}
	return f, st, -1
}

func fleetWorkers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, st, code := statusCommand(ctx, "workers", "styx-scheduler fleet workers [--addr A] [--json]\n\nLists the workers the leader knows.\n\n"+exitText, args, stderr)
	if code >= 0 {
		return code
	}
	if *f.asJSON {
		writeJSONValue(stdout, struct {
			SchedulerID string            `json:"scheduler_id"`
			Term        int64             `json:"term"`
			Workers     []json.RawMessage `json:"workers"`
		}{st.SchedulerId, st.Term, protoList(st.Workers)})
		return exitOK
	}
	fmt.Fprintf(stdout, "leader %s, term %d: %s\n", st.SchedulerId, st.Term, plural(len(st.Workers), "worker"))
	writeWorkers(stdout, st.Workers)
	return exitOK
}

// writeWorkers prints workers as a table.
func writeWorkers(w io.Writer, ws []*styxv1.WorkerStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tNUMA\tCPUS\tCAPACITY\tCREDITS\tIN FLIGHT\tLOAD\tADDR/S\tBATCHES\tMODEL\tSTATE")
	for _, x := range ws {
		numa := "-"
		if x.NumaNode >= 0 {
			numa = fmt.Sprint(x.NumaNode)
		}
		load := 0.0
		if x.Capacity > 0 {
			load = float64(x.InFlight) / float64(x.Capacity)
		}
		state := x.State
		if x.DrainRequested && state != "draining" {
			state += " (drain requested)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.0f%%\t%.0f\t%d\t%s\t%s\n",
			x.WorkerId, x.Host, numa, x.Cpus, x.Capacity, x.Credits, x.InFlight, 100*load, x.AddressesPerSecond, x.BatchesDone, x.ModelVersion, state)
	}
	tw.Flush()
}

func fleetPool(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, st, code := statusCommand(ctx, "pool", "styx-scheduler fleet pool [--addr A] [--json]\n\nPrints the leader's pool of addresses.\n\n"+exitText, args, stderr)
	if code >= 0 {
		return code
	}
	p := st.GetPool()
	if p == nil {
		p = &styxv1.PoolStatus{}
	}
	ready := 0
	for _, w := range st.Workers {
		if w.State == "ready" {
			ready++
		}
	}
	if *f.asJSON {
		pool, _ := jsonOpts.Marshal(p)
		nodes := st.Nodes
		if nodes == nil {
			nodes = []string{}
		}
		writeJSONValue(stdout, struct {
			SchedulerID  string          `json:"scheduler_id"`
			Term         int64           `json:"term"`
			Pool         json.RawMessage `json:"pool"`
			Workers      int             `json:"workers"`
			WorkersReady int             `json:"workers_ready"`
			Nodes        []string        `json:"nodes"`
		}{st.SchedulerId, st.Term, pool, len(st.Workers), ready, nodes})
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"leader", fmt.Sprintf("%s (term %d)", st.SchedulerId, st.Term)},
		{"pending", fmt.Sprint(p.Pending)},
		{"in flight", fmt.Sprint(p.InFlight)},
		{"oldest", (time.Duration(p.OldestAgeMillis) * time.Millisecond).String()},
		{"received", fmt.Sprint(p.Received)},
		{"examined", fmt.Sprint(p.Examined)},
		{"deduplicated", fmt.Sprint(p.Deduplicated)},
		{"shed", fmt.Sprint(p.Shed)},
		{"expired", fmt.Sprint(p.Expired)},
		{"reassigned", fmt.Sprint(p.Reassigned)},
		{"verdicts", fmt.Sprint(p.Verdicts)},
		{"coverage", fmt.Sprintf("%.1f%%", 100*p.Coverage)},
		{"policy", p.ShedPolicy},
		{"workers", fmt.Sprintf("%d (%d ready)", len(st.Workers), ready)},
		{"nodes", fmt.Sprint(len(st.Nodes))},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	tw.Flush()
	return exitOK
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*r = append(*r, s)
		}
	}
	return nil
}

func fleetDrain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFleetFlags("drain", `styx-scheduler fleet drain (--worker ID ... | --host HOST) [--wait] [--timeout D] [flags]

Drains workers before they are taken away: the leader stops sending them
batches and tells each to leave; each answers what it holds, revokes its
lease and exits with 0. With --wait, waits until every one has left.

`+exitText+`
  3  --wait: some workers had not left within --timeout
  4  no such worker, or no worker on that host (nothing was drained)`, stderr)
	var ids repeated
	f.fs.Var(&ids, "worker", "worker id to drain (repeat the flag, or separate ids with commas)")
	host := f.fs.String("host", "", "drain every worker registered with this host")
	wait := f.fs.Bool("wait", false, "wait until every selected worker has left (its lease revoked)")
	timeout := f.fs.Duration("timeout", 2*time.Minute, "with --wait: how long to wait")
	reason := f.fs.String("reason", "", `reason logged by the leader and the workers (default "operator request")`)
	if code := f.parse(args, stderr); code >= 0 {
		return code
	}
	if len(ids) == 0 && *host == "" {
		fmt.Fprintln(stderr, "styx-scheduler fleet drain: name a worker (--worker ID) or a host (--host HOST)")
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "styx-scheduler fleet drain: --timeout must be positive")
		return exitUsage
	}
	a, err := dialAdmin(*f.addr, f.trust)
	if err != nil {
		fmt.Fprintln(stderr, "styx-scheduler:", err)
		return exitFailed
	}
	defer a.close()

	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, fleetRPCTimeout)
	resp, err := a.c.Drain(cctx, &styxv1.DrainRequest{WorkerIds: ids, Host: *host, Reason: *reason})
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, "styx-scheduler: drain:", a.explain(err))
		if grpcstatus.Code(err) == codes.NotFound {
			return exitNotFound
		}
		if grpcstatus.Code(err) == codes.InvalidArgument {
			return exitUsage
		}
		return exitFailed
	}
	out := drainResult{SchedulerID: resp.SchedulerId, Term: resp.Term, Requested: resp.Workers}
	if !*f.asJSON {
		fmt.Fprintf(stdout, "leader %s (term %d) is draining %s:\n", resp.SchedulerId, resp.Term, plural(len(resp.Workers), "worker"))
		writeWorkers(stdout, resp.Workers)
	}
	code := exitOK
	if *wait {
		code = waitDrained(ctx, a, &out, start, *timeout, !*f.asJSON, stdout, stderr)
	}
	if *f.asJSON {
		out.ElapsedSeconds = time.Since(start).Seconds()
		writeDrainJSON(stdout, &out)
	}
	return code
}

// drainResult is what drain reports.
type drainResult struct {
	SchedulerID    string
	Term           int64
	Requested      []*styxv1.WorkerStatus
	Waited         bool
	Left           []leftWorker
	Remaining      []*styxv1.WorkerStatus // still registered when --timeout passed
	ElapsedSeconds float64
}

type leftWorker struct {
	WorkerID     string  `json:"worker_id"`
	AfterSeconds float64 `json:"after_seconds"`
}

// waitDrained polls the leader until none of the requested workers is
// listed any more, or timeout passes.
func waitDrained(ctx context.Context, a *admin, out *drainResult, start time.Time, timeout time.Duration, human bool, stdout, stderr io.Writer) int {
	out.Waited = true
	pending := map[string]bool{}
	for _, w := range out.Requested {
		pending[w.WorkerId] = true
	}
	deadline := start.Add(timeout)
	for {
		st, err := a.status(ctx)
		now := time.Now()
		if err == nil {
			listed := map[string]*styxv1.WorkerStatus{}
			for _, w := range st.Workers {
				listed[w.WorkerId] = w
			}
			for _, id := range slices.Sorted(maps.Keys(pending)) {
				if listed[id] != nil {
					continue
				}
				delete(pending, id)
				after := now.Sub(start)
				out.Left = append(out.Left, leftWorker{WorkerID: id, AfterSeconds: after.Seconds()})
				if human {
					fmt.Fprintf(stdout, "worker %s left after %s\n", id, after.Round(10*time.Millisecond))
				}
			}
			if len(pending) == 0 {
				if human {
					fmt.Fprintf(stdout, "drained %s in %s\n", plural(len(out.Requested), "worker"), now.Sub(start).Round(10*time.Millisecond))
				}
				return exitOK
			}
			if now.After(deadline) {
				for _, id := range slices.Sorted(maps.Keys(pending)) {
					out.Remaining = append(out.Remaining, listed[id])
				}
				fmt.Fprintf(stderr, "styx-scheduler: drain: %s still registered after %s:\n", plural(len(out.Remaining), "worker"), timeout)
				writeWorkers(stderr, out.Remaining)
				return exitTimeout
			}
		} else if now.After(deadline) {
			// Until then, the leader may be changing: keep asking.
			fmt.Fprintf(stderr, "styx-scheduler: drain: gave up waiting after %s: %v\n", timeout, err)
			return exitFailed
		}
		t := time.NewTimer(drainPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			fmt.Fprintln(stderr, "styx-scheduler: drain: interrupted while waiting; the drain goes on")
			return exitFailed
		case <-t.C:
		}
	}
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// writeJSONValue prints v as indented JSON.
func writeJSONValue(w io.Writer, v any) {
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(out))
}

// protoList marshals each message with jsonOpts.
func protoList[M proto.Message](ms []M) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(ms))
	for _, m := range ms {
		b, _ := jsonOpts.Marshal(m)
		out = append(out, b)
	}
	return out
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func writeDrainJSON(w io.Writer, r *drainResult) {
	left := r.Left
	if left == nil {
		left = []leftWorker{}
	}
	writeJSONValue(w, struct {
		SchedulerID    string            `json:"scheduler_id"`
		Term           int64             `json:"term"`
		Workers        []json.RawMessage `json:"workers"`
		Waited         bool              `json:"waited"`
		Left           []leftWorker      `json:"left"`
		Remaining      []json.RawMessage `json:"remaining"`
		ElapsedSeconds float64           `json:"elapsed_seconds"`
	}{r.SchedulerID, r.Term, protoList(r.Requested), r.Waited, left, protoList(r.Remaining), r.ElapsedSeconds})
}
