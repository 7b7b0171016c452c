package trainer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/trainer/internal/labels"
)

// attackReporter is the reporter the trainer gives the reports of an
// attacks file (reports are told apart by address, time, kind and
// reporter; a file has one reporter).
const attackReporter = "trainer"

// NoHistory is the provenance of a schema 2 model trained without a
// verdicts or attacks file.
const NoHistory = "none: no --verdicts or --attacks file, so every history feature was 0 in training; the model learnt nothing from history and gives it no weight"

// trainHistory is the history the schema 2 examples read, folded from the
// verdicts and attacks files, and what each database network's own
// addresses contribute to it (left out of that network's example).
type trainHistory struct {
	t *history.Table
	// own is, per database network, the contribution of its addresses
	// other than its first (Lookup leaves that one out) to its AS and to
	// the bucket of its first address.
	own  map[netip.Prefix]ownContribution
	desc string
}

type ownContribution struct{ as, bucket history.Counts }

// loadHistory folds the verdicts and attacks files into a history table.
// Without either file it returns nil: the history block is zero.
func loadHistory(db *locdb.DB, verdictsFile, attacksFile string, now time.Time) (*trainHistory, error) {
	if verdictsFile == "" && attacksFile == "" {
		return nil, nil
	}
	var verdicts []labels.Entry
	var reports []attacks.Report
	var desc []string
	if verdictsFile != "" {
		sum, err := readHashed(verdictsFile, func(r io.Reader) (err error) {
			verdicts, err = labels.Parse(r, verdictsFile)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("verdicts: %w", err)
		}
		var bad []string
		proxies := 0
		for _, v := range verdicts {
			if !v.Prefix.IsSingleIP() {
				bad = append(bad, fmt.Sprintf("%s:%d: %s is a prefix; a verdict names one address", verdictsFile, v.Line, v.Prefix))
			}
			if v.Label != labels.Clean {
				proxies++
			}
		}
		if len(bad) > 0 {
			return nil, errors.New(strings.Join(bad, "\n"))
		}
		desc = append(desc, fmt.Sprintf("verdicts %s (sha256 %s, %d addresses, %d proxies)", verdictsFile, sum, len(verdicts), proxies))
	}
	if attacksFile != "" {
		sum, err := readHashed(attacksFile, func(r io.Reader) (err error) {
			reports, err = readAttacks(r, attacksFile, now)
			return err
		})
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Op == "open" {
			return nil, fmt.Errorf("attacks: %w", err)
		}
		if err != nil {
			return nil, err
		}
		desc = append(desc, fmt.Sprintf("attacks %s (sha256 %s, %d reports)", attacksFile, sum, len(reports)))
	}
	n := len(verdicts) + len(reports) + 1
	t := history.New(history.Config{
		MaxAddrs: n, // nothing is evicted
		Locate:   locdb.ASNOf(db.Lookup),
		Attacks:  attacks.NewTable(n), // drops a report listed twice
	})
	for _, v := range verdicts {
		t.AddVerdict(v.Addr(), v.Label != labels.Clean, 0)
	}
	for _, r := range reports {
		t.AddAttack(r)
	}
	h := &trainHistory{t: t, own: map[netip.Prefix]ownContribution{}}
	t.Each(func(e history.Entry) bool {
		nw, ok := db.Lookup(e.Addr)
		if !ok || e.Addr == nw.Prefix.Addr() {
			return true
		}
		c := h.own[nw.Prefix]
		c.as = c.as.Add(e.Contribution())
		if e.Bucket == history.BucketKey(nw.Prefix.Addr()) {
			c.bucket = c.bucket.Add(e.Contribution())
		}
		h.own[nw.Prefix] = c
		return true
	})
	z := t.Sizes()
	clock := "none (no attack report)"
	if !z.Clock.IsZero() {
		clock = z.Clock.Format(time.RFC3339)
	}
	h.desc = fmt.Sprintf("%s; %d addresses, %d /24 or /48 buckets, %d ASes; attack recency as of the newest report, %s; "+
		"leave-one-out: an address example without its own verdict and reports in its bucket and AS, a database network without all of its addresses'",
		strings.Join(desc, ", "), z.Addrs, z.Buckets, z.ASes, clock)
	return h, nil
}

func readAttacks(f io.Reader, path string, now time.Time) ([]attacks.Report, error) {
	var out []attacks.Report
	var bad []string
	sc := attacks.NewScanner(f, now, attackReporter)
	for {
		r, err := sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *attacks.LineError
		switch {
		case errors.As(err, &le):
			if len(bad) < 20 {
				bad = append(bad, fmt.Sprintf("%s:%d: %s", path, le.Line, le.Msg))
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("attacks: %w", err)
		}
		out = append(out, r)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("attacks file refused:\n%s", strings.Join(bad, "\n"))
	}
	return out, nil
}

// writeNetwork writes the history block of a database network's example:
// its first address's history, with the network's own addresses left out
// of its bucket and AS (their verdicts follow from its flags, which are
// its label).
func (h *trainHistory) writeNetwork(n locdb.Network, x []float32) {
	if h == nil {
		features.WriteHistory(history.Stats{}, x)
		return
	}
	s := h.t.Lookup(n.Prefix.Addr(), n.ASN)
	if c, ok := h.own[n.Prefix]; ok {
		s.Bucket, s.AS = s.Bucket.Sub(c.bucket), s.AS.Sub(c.as)
	}
	features.WriteHistory(s, x)
}

// writeAddr writes the history block of an address example, the address
// left out of its bucket and AS as a live address is.
func (h *trainHistory) writeAddr(a netip.Addr, asn uint32, x []float32) {
	if h == nil {
		features.WriteHistory(history.Stats{}, x)
		return
	}
	features.WriteHistory(h.t.Lookup(a, asn), x)
}
