package locdbtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/styx-inference/styx/pkg/locdb"
)

// ReferenceTool is the command of the reference implementation.
const ReferenceTool = "location"

// ReferencePath returns the reference tool's path, or "" when it is not
// installed.
func ReferencePath() string {
	p, err := exec.LookPath(ReferenceTool)
	if err != nil {
		return ""
	}
	return p
}

// RefAnswer is what the reference tool reports for one address.
type RefAnswer struct {
	Network netip.Prefix
	// Country is the country's name as the tool prints it; "" when the
	// network has no country. (A code without a country record makes the
	// tool fail rather than print the code.)
	Country string
	ASN     uint32
	ASName  string // "" when the AS has no record
	Flags   locdb.Flags
}

// ReferenceOptions tune ReferenceLookup.
type ReferenceOptions struct {
	Tool     string // path of the tool; "" means ReferencePath()
	Batch    int    // addresses per invocation; 0 means 2500
	Parallel int    // concurrent invocations; 0 means 2
	// Warmup is an address the database is known to cover, looked up first
	// in every invocation (its answer is dropped). See referenceBatch for
	// why it saves invocations.
	Warmup string
}

// ReferenceStats counts the work ReferenceLookup did.
type ReferenceStats struct {
	Invocations int
}

// ReferenceLookup asks the reference tool about every address (given as
// strings the tool understands) in the database at dbPath. Addresses it
// finds nothing for are absent from the map. Addresses are passed many per
// invocation, several invocations at a time. Any failure of the tool other
// than "nothing found" is an error.
func ReferenceLookup(ctx context.Context, dbPath string, addrs []string, opt ReferenceOptions) (map[string]RefAnswer, ReferenceStats, error) {
	var stats ReferenceStats
	if opt.Tool == "" {
		opt.Tool = ReferencePath()
		if opt.Tool == "" {
			return nil, stats, fmt.Errorf("%s: not installed", ReferenceTool)
		}
	}
	if opt.Batch <= 0 {
		opt.Batch = 2500
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 2
	}
	var (
		mu       sync.Mutex
		out      = make(map[string]RefAnswer, len(addrs))
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, opt.Parallel)
	)
	for start := 0; start < len(addrs); start += opt.Batch {
		batch := addrs[start:min(start+opt.Batch, len(addrs))]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, runs, err := referenceBatch(ctx, opt.Tool, dbPath, opt.Warmup, batch)
			mu.Lock()
			defer mu.Unlock()
			stats.Invocations += runs
			if err != nil && firstErr == nil {
				firstErr = err
			}
			for k, v := range res {
				out[k] = v
			}
		})
	}
	wg.Wait()
	return out, stats, firstErr
}

// staleErrno is how the tool reports a miss when no lookup has succeeded
// yet in the process: the binding reads an errno left over from start-up
// and raises it instead of returning "nothing found".
const staleErrno = "[Errno 25] Inappropriate ioctl for device"

// referenceBatch runs the tool until every address of batch is answered.
//
// The tool prints a block per address found and "Nothing found for ADDR" on
// stderr otherwise — except that a miss before any hit in the process
// aborts the run (staleErrno). The warm-up address, a known hit, avoids
// that; without one, a run that stops that way marks the first unanswered
// address as not found and the rest is retried in a new run.
func referenceBatch(ctx context.Context, tool, dbPath, warmup string, batch []string) (map[string]RefAnswer, int, error) {
	out := make(map[string]RefAnswer, len(batch))
	runs := 0
	for len(batch) > 0 {
		args := []string{"--database", dbPath, "lookup"}
		if warmup != "" {
			args = append(args, warmup)
		}
		args = append(args, batch...)
		cmd := exec.CommandContext(ctx, tool, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		runs++
		if ctx.Err() != nil {
			return out, runs, ctx.Err()
		}
		res, err := ParseReferenceOutput(stdout.Bytes())
		if err != nil {
			return out, runs, err
		}
		missing := map[string]bool{}
		var other []string
		for line := range strings.Lines(stderr.String()) {
			line = strings.TrimRight(line, "\n")
			if a, ok := strings.CutPrefix(line, "Nothing found for "); ok {
				missing[a] = true
			} else {
				other = append(other, line)
			}
		}
		if warmup != "" && len(res) == 0 && len(missing) == 0 {
			return out, runs, fmt.Errorf("%s: warm-up address %s failed: %v: %s", tool, warmup, runErr, stderr.String())
		}
		// Find how far the run got.
		done := 0
		for done < len(batch) {
			a := batch[done]
			if r, ok := res[a]; ok {
				out[a] = r
			} else if !missing[a] {
				break
			}
			done++
		}
		if done == len(batch) {
			if len(other) > 0 {
				return out, runs, fmt.Errorf("%s: %v: %s", tool, runErr, strings.Join(other, "\n"))
			}
			break
		}
		if len(other) != 1 || other[0] != staleErrno {
			return out, runs, fmt.Errorf("%s failed at %q: %v: %s", tool, batch[done], runErr, strings.Join(other, "\n"))
		}
		batch = batch[done+1:] // batch[done] was a miss reported as staleErrno
	}
	return out, runs, nil
}

// ParseReferenceOutput parses the reference tool's `lookup` output: for each
// address an "ADDR:" line followed by indented "Label : value" lines.
func ParseReferenceOutput(b []byte) (map[string]RefAnswer, error) {
	out := map[string]RefAnswer{}
	var cur string
	var ans RefAnswer
	flush := func() {
		if cur != "" {
			out[cur] = ans
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "  ") {
			a, ok := strings.CutSuffix(line, ":")
			if !ok {
				return nil, fmt.Errorf("reference output: unexpected line %q", line)
			}
			flush()
			cur, ans = a, RefAnswer{}
			continue
		}
		label, value, ok := strings.Cut(strings.TrimLeft(line, " "), ": ")
		if !ok || cur == "" {
			return nil, fmt.Errorf("reference output: unexpected line %q", line)
		}
		label = strings.TrimRight(label, " ")
		switch label {
		case "Network":
			p, err := netip.ParsePrefix(value)
			if err != nil {
				return nil, fmt.Errorf("reference output for %s: %w", cur, err)
			}
			ans.Network = p
		case "Country":
			ans.Country = value
		case "Autonomous System":
			num, name, _ := strings.Cut(value, " - ")
			n, err := strconv.ParseUint(strings.TrimPrefix(num, "AS"), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("reference output for %s: AS %q: %w", cur, value, err)
			}
			ans.ASN, ans.ASName = uint32(n), name
		case "Anonymous Proxy":
			ans.Flags |= locdb.FlagAnonymousProxy
		case "Satellite Provider":
			ans.Flags |= locdb.FlagSatelliteProvider
		case "Anycast":
			ans.Flags |= locdb.FlagAnycast
		case "Hostile Network safe to drop":
			ans.Flags |= locdb.FlagDrop
		default:
			return nil, fmt.Errorf("reference output for %s: unknown field %q", cur, label)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// Matches reports how n (from locdb) differs from the reference answer; ""
// when they agree on every field the tool prints.
func (r RefAnswer) Matches(n locdb.Network) string {
	var diffs []string
	if n.Prefix != r.Network {
		diffs = append(diffs, fmt.Sprintf("network %s != %s", n.Prefix, r.Network))
	}
	if want := cmpCountry(n); want != r.Country {
		diffs = append(diffs, fmt.Sprintf("country %q != %q", want, r.Country))
	}
	if n.ASN != r.ASN || n.ASName != r.ASName {
		diffs = append(diffs, fmt.Sprintf("AS %d %q != %d %q", n.ASN, n.ASName, r.ASN, r.ASName))
	}
	if n.Flags&0xF != r.Flags {
		diffs = append(diffs, fmt.Sprintf("flags %s != %s", n.Flags&0xF, r.Flags))
	}
	return strings.Join(diffs, "; ")
}

// cmpCountry is what the tool prints for n's country.
func cmpCountry(n locdb.Network) string {
	if n.CountryName != "" {
		return n.CountryName
	}
	return n.Country
}
