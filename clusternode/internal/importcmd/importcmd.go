package importcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
)

// EnvToken is read when --token is not given: the node's own variable.
const EnvToken = "STYX_ATTACK_TOKEN"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // lines rejected, a request failed, or interrupted
	exitUsage  = 2 // bad flags, no file, a file cannot be opened
)

// Retries of a chunk the node could not take (network error, 5xx).
const (
	maxAttempts = 6
	retryMin    = 500 * time.Millisecond
	retryMax    = 10 * time.Second
)

const usageText = `Usage: styx-node import-attacks [--node URL] [--token T] [--chunk N] [--progress D] FILE...

Reads attack reports from each FILE ("-" is standard input), one per line,
either CSV
    address,time,kind
or a JSON object
    {"address": "203.0.113.7", "time": "2024-05-01T12:00:00Z", "kind": "login"}
time is RFC 3339 or Unix seconds; kind is one of
    ` + attacks.KindWords + `
Blank lines, lines starting with '#' and a CSV header line are skipped.

Every line is checked here first; a bad one is printed to stderr as
FILE:LINE: reason and not sent. The valid reports go to the node's
POST /v2/attacks in chunks of --chunk. A chunk the node cannot take for
the moment (network error, 5xx, 503 while its forwarding outbox is full) is
retried with backoff up to 6 times. Progress goes to stderr every
--progress; a summary line goes to stdout at the end.

Flags:
  --node URL      the node's query API (default http://127.0.0.1:8080)
  --token T       the node's --attack-token (default: $STYX_ATTACK_TOKEN);
                  prefer the variable, a flag shows in the process list
  --chunk N       reports per request, at most the node's --attack-max-reports
                  (default 1000)
  --progress D    time between progress lines (default 2s; 0: none)
  --timeout D     bound on one request (default 30s)
  -h, --help      print this help

Exit status:
  0  every line was a valid report and the node took every report
  1  some line was rejected (here or by the node), a request failed, or the
     run was interrupted
  2  usage error, or a file cannot be opened
`

type options struct {
	node     string
	token    string
	chunk    int
	progress time.Duration
	timeout  time.Duration
	files    []string
}

func parseArgs(args []string, stderr io.Writer) (options, int, bool) {
	o := options{}
	fs := flag.NewFlagSet("styx-node import-attacks", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.node, "node", "http://127.0.0.1:8080", "")
	fs.StringVar(&o.token, "token", "", "")
	fs.IntVar(&o.chunk, "chunk", 1000, "")
	fs.DurationVar(&o.progress, "progress", 2*time.Second, "")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "")
	// Flags may come after the files too.
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stderr, usageText)
				return o, exitOK, false
			}
			fmt.Fprintf(stderr, "import-attacks: %v\n\n%s", err, usageText)
			return o, exitUsage, false
		}
		if fs.NArg() == 0 {
			break
		}
		o.files = append(o.files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if o.token == "" {
		o.token = os.Getenv(EnvToken)
	}
	var problems []string
	if len(o.files) == 0 {
		problems = append(problems, "no FILE given (use - for standard input)")
	}
	if o.token == "" {
		problems = append(problems, "no token: set --token or "+EnvToken)
	}
	if u, err := url.Parse(o.node); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		problems = append(problems, fmt.Sprintf("--node %q: want an http:// or https:// URL", o.node))
	}
	if o.chunk < 1 {
		problems = append(problems, fmt.Sprintf("--chunk %d: want at least 1", o.chunk))
	}
	if o.timeout <= 0 || o.progress < 0 {
		problems = append(problems, "--timeout must be positive and --progress not negative")
	}
	stdin := 0
	for _, f := range o.files {
		if f == "-" {
			stdin++
		}
	}
	if stdin > 1 {
		problems = append(problems, `"-" (standard input) given twice`)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "import-attacks: %s\n\n%s", strings.Join(problems, "; "), usageText)
		return o, exitUsage, false
	}
	return o, exitOK, true
}

// Run runs the command; it returns the exit status.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, code, ok := parseArgs(args, stderr)
	if !ok {
		return code
	}
	// Open every file first: a missing one is a usage error before anything
	// is sent.
	inputs := make([]io.Reader, len(o.files))
	for i, name := range o.files {
		if name == "-" {
			inputs[i] = stdin
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "import-attacks: %v\n", err)
			closeAll(inputs)
			return exitUsage
		}
		inputs[i] = f
	}
	defer closeAll(inputs)

	im := &importer{
		o:       o,
		stderr:  stderr,
		client:  &http.Client{Timeout: o.timeout},
		target:  strings.TrimSuffix(o.node, "/") + "/v2/attacks",
		started: time.Now(),
	}
	im.lastProgress = im.started
	err := im.run(ctx, inputs)
	s := im.sum
	fmt.Fprintf(stdout, "imported %d reports from %d files: %d new, %d duplicates, %d too old; %d lines rejected\n",
		s.sent, len(o.files), s.new, s.dups, s.tooOld, s.rejected)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "import-attacks: %v\n", err)
		return exitFailed
	case s.rejected > 0:
		return exitFailed
	}
	return exitOK
}

func closeAll(rs []io.Reader) {
	for _, r := range rs {
		if c, ok := r.(*os.File); ok && c != os.Stdin {
			_ = c.Close()
		}
	}
}

// source is where a report came from.
type source struct {
	file string
	line int
}

type summary struct {
	read, sent, rejected    int
	new, dups, tooOld       int
	chunks, retries, failed int
}

type importer struct {
	o      options
	stderr io.Writer
	client *http.Client
	target string

	started, lastProgress time.Time
	sum                   summary

	body bytes.Buffer
	srcs []source
}

func (im *importer) run(ctx context.Context, inputs []io.Reader) error {
	for i, in := range inputs {
		name := im.o.files[i]
		if name == "-" {
			name = "<stdin>"
		}
		sc := attacks.NewScanner(in, time.Now(), "import")
		for {
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			r, err := sc.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			var le *attacks.LineError
			switch {
			case errors.As(err, &le):
				im.sum.read++
				im.sum.rejected++
				fmt.Fprintf(im.stderr, "%s:%d: %s\n", name, le.Line, le.Msg)
				continue
			case err != nil:
				return fmt.Errorf("%s: %w", name, err)
			}
			im.sum.read++
			// RFC 3339 with nanoseconds: the node parses it back exactly.
			fmt.Fprintf(&im.body, "%s,%s,%s\n", r.Addr, r.Time.UTC().Format(time.RFC3339Nano), r.Kind)
			im.srcs = append(im.srcs, source{name, sc.Line()})
			if len(im.srcs) >= im.o.chunk {
				if err := im.flush(ctx); err != nil {
					return err
				}
			}
			if im.sum.read%4096 == 0 {
				im.maybeProgress(name)
			}
		}
		im.maybeProgress(name)
	}
	return im.flush(ctx)
}

func (im *importer) maybeProgress(name string) {
	if im.o.progress == 0 || time.Since(im.lastProgress) < im.o.progress {
		return
	}
	im.lastProgress = time.Now()
	s := im.sum
	fmt.Fprintf(im.stderr, "import-attacks: %s: %d lines read, %d reports sent, %d rejected (%.0fs)\n",
		name, s.read, s.sent, s.rejected, time.Since(im.started).Seconds())
}

// answer is the node's JSON answer to POST /v2/attacks.
type answer struct {
	Status     string `json:"status"`
	Message    string `json:"message"`
	Accepted   int    `json:"accepted"`
	New        int    `json:"new"`
	Duplicates int    `json:"duplicates"`
	TooOld     int    `json:"too_old"`
	Rejected   int    `json:"rejected"`
	Errors     []struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	} `json:"errors"`
}

// flush posts the buffered chunk, retrying what may succeed later.
func (im *importer) flush(ctx context.Context) error {
	if len(im.srcs) == 0 {
		return nil
	}
	body := im.body.Bytes()
	wait := retryMin
	for attempt := 1; ; attempt++ {
		ans, status, retryAfter, err := im.post(ctx, body)
		// A 400 that lists rejected lines is an answer too: every line of
		// the chunk was refused (the node's clock, say), nothing to retry.
		if err == nil && (status == http.StatusOK || status == http.StatusBadRequest && ans.Rejected > 0) {
			im.account(ans)
			break
		}
		retryable := err != nil || status >= 500
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if err == nil {
			err = fmt.Errorf("node answered %d: %s", status, ans.Message)
		}
		if !retryable || attempt == maxAttempts {
			im.sum.failed++
			return fmt.Errorf("chunk of %d reports (from %s:%d) not imported: %w",
				len(im.srcs), im.srcs[0].file, im.srcs[0].line, err)
		}
		d := max(wait, retryAfter)
		fmt.Fprintf(im.stderr, "import-attacks: %v; retrying in %s\n", err, d)
		im.sum.retries++
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(d):
		}
		wait = min(2*wait, retryMax)
	}
	im.body.Reset()
	im.srcs = im.srcs[:0]
	return nil
}

func (im *importer) account(ans answer) {
	im.sum.chunks++
	im.sum.sent += ans.Accepted
	im.sum.new += ans.New
	im.sum.dups += ans.Duplicates
	im.sum.tooOld += ans.TooOld
	im.sum.rejected += ans.Rejected
	for _, e := range ans.Errors {
		if e.Line >= 1 && e.Line <= len(im.srcs) {
			s := im.srcs[e.Line-1]
			fmt.Fprintf(im.stderr, "%s:%d: rejected by the node: %s\n", s.file, s.line, e.Error)
		}
	}
	if n := ans.Rejected - len(ans.Errors); n > 0 {
		fmt.Fprintf(im.stderr, "import-attacks: %d more lines rejected by the node\n", n)
	}
}

func (im *importer) post(ctx context.Context, body []byte) (ans answer, status int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, im.target, bytes.NewReader(body))
	if err != nil {
		return ans, 0, 0, err
	}
	req.Header.Set("Content-Type", "text/csv; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+im.o.token)
	resp, err := im.client.Do(req)
	if err != nil {
		return ans, 0, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ans, resp.StatusCode, 0, fmt.Errorf("read answer: %w", err)
	}
	if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
		retryAfter = min(time.Duration(s)*time.Second, time.Minute)
	}
	if jerr := json.Unmarshal(raw, &ans); jerr != nil {
		ans.Message = strings.TrimSpace(string(raw))
		if len(ans.Message) > 200 {
			ans.Message = ans.Message[:200]
		}
	}
	return ans, resp.StatusCode, retryAfter, nil
}
