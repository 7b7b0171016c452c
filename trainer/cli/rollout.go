package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pkiflag"
)

// rolloutCommand is the shared shape of publish, promote, rollback and
// status: flags, an etcd client, an action.
func rolloutCommand(ctx context.Context, name, synopsis string, args []string, stdout, stderr io.Writer,
	extra func(fs *flag.FlagSet), run func(ctx context.Context, cli *clientv3.Client) error) int {
	fs := flag.NewFlagSet("styx-trainer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("etcd-endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	var trust pkiflag.Flags
	trust.Register(fs)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = envflag.Usage(fs, "STYX", synopsis)
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	src, err := trust.Load(zerolog.Nop())
	if err == nil {
		// etcd lets only trainers and admins write /styx/models/.
		err = pkiflag.Require(src, pki.Trainer, pki.Admin)
	}
	if err != nil {
		fmt.Fprintf(stderr, "styx-trainer %s: %v\n", name, err)
		return 2
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: pki.ClientTLS(src, pki.Etcd)})
	if err != nil {
		fmt.Fprintf(stderr, "styx-trainer %s: etcd: %v\n", name, err)
		return 1
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, cli); err != nil {
		fmt.Fprintf(stderr, "styx-trainer %s: %v\n", name, err)
		return 1
	}
	return 0
}

func printPointer(w io.Writer, p keyspace.ModelPointer) {
	fmt.Fprintf(w, "current   %s  sha256 %s  %d bytes  %s\n", p.Version, p.SHA256, p.Size, p.URL)
	if p.Canary != nil {
		fmt.Fprintf(w, "canary    %s  share %.1f%%  sha256 %s  %s\n", p.Canary.Version, 100*p.CanaryShare, p.Canary.SHA256, p.Canary.URL)
	}
	if p.Previous != nil {
		fmt.Fprintf(w, "previous  %s  (what rollback restores)\n", p.Previous.Version)
	}
}

func publish(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var path, fileURL string
	var canary float64
	return rolloutCommand(ctx, "publish", `styx-trainer publish --model M [--canary SHARE] [--file-url]

Verifies the model artifact M (payload sha256, feature schema), stores it in
etcd (or, with --file-url, names its absolute path, which every server must
be able to read) and points /styx/models/current at it. Workers and cluster
nodes load it, verify its checksum and swap to it between batches. With
--canary SHARE (0..1] it runs beside the current model on that share of the
addresses instead; 'styx-trainer status' shows how the two differ, then
'styx-trainer promote' or 'styx-trainer rollback'.`, args, stdout, stderr,
		func(fs *flag.FlagSet) {
			fs.StringVar(&path, "model", "", "model artifact (required)")
			fs.Float64Var(&canary, "canary", 0, "run as a canary on this share of the addresses (0 = make it current)")
			fs.StringVar(&fileURL, "file-url", "", "publish as file://<this path> instead of storing the bytes in etcd")
		},
		func(ctx context.Context, cli *clientv3.Client) error {
			if path == "" {
				return fmt.Errorf("--model is required")
			}
			if canary < 0 || canary > 1 {
				return fmt.Errorf("--canary %g outside [0, 1]", canary)
			}
			m, err := model.Load(path)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var ref keyspace.ModelRef
			if fileURL != "" {
				if !filepath.IsAbs(fileURL) {
					return fmt.Errorf("--file-url %q must be an absolute path", fileURL)
				}
				ref = modelstore.Ref(m.Version, b, "file://"+fileURL)
			} else if ref, err = modelstore.Store(ctx, cli, m.Version, b); err != nil {
				return err
			}
			var p keyspace.ModelPointer
			if canary > 0 {
				p, err = modelstore.StartCanary(ctx, cli, ref, canary)
			} else {
				p, err = modelstore.Activate(ctx, cli, ref)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "published %s\n", m.Version)
			printPointer(stdout, p)
			return nil
		})
}

func promote(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return rolloutCommand(ctx, "promote", `styx-trainer promote

Makes the canary the current model; the current one becomes previous.`, args, stdout, stderr, nil,
		func(ctx context.Context, cli *clientv3.Client) error {
			p, err := modelstore.Promote(ctx, cli)
			if err != nil {
				return err
			}
			printPointer(stdout, p)
			return nil
		})
}

func rollback(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return rolloutCommand(ctx, "rollback", `styx-trainer rollback

Stops a running canary; without one, restores the previous model.`, args, stdout, stderr, nil,
		func(ctx context.Context, cli *clientv3.Client) error {
			p, err := modelstore.Rollback(ctx, cli)
			if err != nil {
				return err
			}
			printPointer(stdout, p)
			if _, err := modelstore.Prune(ctx, cli); err != nil {
				fmt.Fprintf(stdout, "prune: %v\n", err)
			}
			return nil
		})
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	return rolloutCommand(ctx, "status", `styx-trainer status [--json]

Prints /styx/models/current and, while a canary runs, every worker's
comparison of the canary with the current model: how many addresses both
examined, how many answers differed, by type and by AS.`, args, stdout, stderr,
		func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") },
		func(ctx context.Context, cli *clientv3.Client) error {
			p, _, err := modelstore.Current(ctx, cli)
			if err != nil {
				return err
			}
			resp, err := cli.Get(ctx, keyspace.CanaryPrefix, clientv3.WithPrefix())
			if err != nil {
				return err
			}
			var reps []keyspace.CanaryReport
			for _, kv := range resp.Kvs {
				var r keyspace.CanaryReport
				if keyspace.Decode(kv.Value, &r) == nil {
					reps = append(reps, r)
				}
			}
			if asJSON {
				out, _ := json.MarshalIndent(struct {
					Pointer keyspace.ModelPointer   `json:"pointer"`
					Canary  []keyspace.CanaryReport `json:"canary_reports"`
				}{p, reps}, "", "  ")
				fmt.Fprintln(stdout, string(out))
				return nil
			}
			printPointer(stdout, p)
			var total keyspace.CanaryReport
			total.ByType, total.ByASN = map[string]uint64{}, map[string]uint64{}
			for _, r := range reps {
				fmt.Fprintf(stdout, "worker %-20s %s vs %s: %d examined, %d differed\n", r.WorkerID, r.Canary, r.Current, r.Examined, r.Differed)
				total.Examined += r.Examined
				total.Differed += r.Differed
				for k, v := range r.ByType {
					total.ByType[k] += v
				}
				for k, v := range r.ByASN {
					total.ByASN[k] += v
				}
			}
			if len(reps) > 0 {
				pct := 0.0
				if total.Examined > 0 {
					pct = 100 * float64(total.Differed) / float64(total.Examined)
				}
				fmt.Fprintf(stdout, "all workers: %d examined, %d differed (%.2f%%)\n", total.Examined, total.Differed, pct)
				printCounts(stdout, "by type (current -> canary; empty = not a proxy)", total.ByType)
				printCounts(stdout, "by AS", total.ByASN)
			}
			return nil
		})
}

func printCounts(w io.Writer, title string, m map[string]uint64) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	fmt.Fprintf(w, "%s:\n", title)
	for i, k := range keys {
		if i == 15 {
			fmt.Fprintf(w, "  … %d more\n", len(keys)-i)
			break
		}
		fmt.Fprintf(w, "  %-24s %d\n", k, m[k])
	}
}
