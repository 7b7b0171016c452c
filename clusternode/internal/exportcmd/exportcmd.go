package exportcmd

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/verdict"
)

// EnvDataDir sets the data directory when --data-dir is not given, as for
// styx-node serve.
const EnvDataDir = "STYX_DATA_DIR"

// Labels written, as trainer/internal/labels names them.
const (
	LabelAnonymiser = "anonymiser"
	LabelHostile    = "hostile"
	LabelClean      = "clean"
)

// ProbeEvidencePrefix starts the evidence an open-proxy probe adds to a
// verdict ("proxyprobe:SOCKS5:1080").
const ProbeEvidencePrefix = "proxyprobe:"

// Header is the first line written; the trainer skips it.
const Header = "address,label"

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // store unreadable or in use, output not writable, interrupted
	exitUsage = 2
)

// openTimeout is how long to wait for the store's file lock.
var openTimeout = time.Second

const prefix = "export-verdicts: "

const usageText = `Usage: styx-node export-verdicts [--data-dir DIR] [--probe-confirmed] [--out FILE|-]

Reads the node's verdict store (DIR/styx-node.db) read-only and writes its
verdicts as a labels file for "styx-trainer train --labels FILE": a header
line "address,label", then one "address,label" line per verdict, in address
order. A verdict with proxy set is labelled anonymiser (hostile when its
type is Hostile), one without is labelled clean.

A running node locks the store: stop it, or copy styx-node.db elsewhere
while it runs (e.g. from a filesystem snapshot) and point --data-dir at the
copy. The count of lines written goes to standard error.

Flags:
  --data-dir DIR     the node's data directory (default: $STYX_DATA_DIR if
                     set, else ./styx-node-data)
  --probe-confirmed  only verdicts with a "proxyprobe:" evidence entry (an
                     open proxy the worker's probe connected through), all
                     labelled anonymiser
  --out FILE         output file, replaced once complete; - is standard
                     output (default -)
  -h, --help         print this help

Exit status:
  0  the file was written (also with no verdict line: the trainer then
     refuses it)
  1  the store cannot be read or is in use, the output cannot be written,
     or the run was interrupted
  2  usage error
`

type options struct {
	dataDir        string
	probeConfirmed bool
	out            string
}

func parseArgs(args []string) (options, error) {
	o := options{dataDir: clusternode.DefaultConfig().DataDir, out: "-"}
	fs := flag.NewFlagSet("export-verdicts", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.dataDir, "data-dir", o.dataDir, "")
	fs.BoolVar(&o.probeConfirmed, "probe-confirmed", false, "")
	fs.StringVar(&o.out, "out", o.out, "")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if v := os.Getenv(EnvDataDir); !set["data-dir"] && v != "" {
		o.dataDir = v
	}
	if o.dataDir == "" {
		return o, errors.New("--data-dir must not be empty")
	}
	if o.out == "" {
		return o, errors.New("--out must not be empty (- is standard output)")
	}
	return o, nil
}

// Run executes export-verdicts with args (not including the command name)
// and returns the process exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, usageText)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\nRun 'styx-node export-verdicts --help' for usage.\n", prefix, err)
		return exitUsage
	}

	st, err := store.OpenReadOnly(filepath.Join(o.dataDir, clusternode.StoreFile), openTimeout, zerolog.Nop())
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		return exitFail
	}
	defer st.Close()

	dest := "standard output"
	var w io.Writer = stdout
	var tmp *os.File
	if o.out != "-" {
		dest = o.out
		tmp, err = os.CreateTemp(filepath.Dir(o.out), "."+filepath.Base(o.out)+".*.tmp")
		if err != nil {
			fmt.Fprintf(stderr, "%s%v\n", prefix, err)
			return exitFail
		}
		defer os.Remove(tmp.Name()) // fails harmlessly once renamed
		defer tmp.Close()
		w = tmp
	}

	read, written, err := export(ctx, st, w, o.probeConfirmed)
	if err == nil && tmp != nil {
		err = errors.Join(tmp.Close(), os.Rename(tmp.Name(), o.out))
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		return exitFail
	}
	what := "verdicts"
	if o.probeConfirmed {
		what = "probe-confirmed verdicts"
	}
	fmt.Fprintf(stderr, "%swrote %d labels (%s of %d stored) to %s\n", prefix, written, what, read, dest)
	if written == 0 {
		fmt.Fprintf(stderr, "%swarning: no labelled line; styx-trainer refuses such a file\n", prefix)
	}
	return exitOK
}

// export writes the header and one line per selected verdict to w and
// returns how many verdicts it read and how many lines it wrote.
func export(ctx context.Context, st *store.Store, w io.Writer, probeConfirmed bool) (read, written int, err error) {
	bw := bufio.NewWriter(w)
	bw.WriteString(Header + "\n")
	err = st.ForEachVerdict(func(addr netip.Addr, v verdict.Verdict) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", context.Cause(ctx))
		}
		read++
		label, ok := Label(v, probeConfirmed)
		if !ok {
			return nil
		}
		written++
		_, err := fmt.Fprintf(bw, "%s,%s\n", addr, label)
		return err
	})
	if err != nil {
		return read, written, err
	}
	if err := bw.Flush(); err != nil {
		return read, written, fmt.Errorf("write: %w", err)
	}
	return read, written, nil
}

// Label returns the training label of v, and false when v is not exported:
// with probeConfirmed, only a verdict with a probe evidence entry is, as
// an anonymiser; otherwise every verdict is, as anonymiser (hostile when
// its type is Hostile) or clean.
func Label(v verdict.Verdict, probeConfirmed bool) (string, bool) {
	if probeConfirmed {
		return LabelAnonymiser, ProbeConfirmed(v)
	}
	switch {
	case !v.Proxy:
		return LabelClean, true
	case strings.EqualFold(v.Type, "Hostile"):
		return LabelHostile, true
	}
	return LabelAnonymiser, true
}

// ProbeConfirmed reports whether an open-proxy probe confirmed v.
func ProbeConfirmed(v verdict.Verdict) bool {
	for _, e := range v.Evidence {
		if strings.HasPrefix(e, ProbeEvidencePrefix) {
			return true
		}
	}
	return false
}
