package dev

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/locdb"
)

// perRequest is how many addresses one POST /v2/ query carries.
const perRequest = 100

// sampleNetworks picks n networks uniformly from the database at path.
func sampleNetworks(path string, n int, rng *rand.Rand) ([]netip.Prefix, error) {
	db, err := locdb.Open(locdb.Config{Path: path})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := addrsample.Networks(db, n, rng)
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no networks", path)
	}
	return out, nil
}

// load sends the nodes query batches at a steady rate: every 100 ms, a
// tenth of the rate, as POST /v2/ requests of perRequest addresses, each
// request to the next node in turn.
type load struct {
	bases []string       // the nodes' query API base URLs
	nets  []netip.Prefix // each query asks for a random address inside one of these
	rate  int

	queries atomic.Uint64 // addresses answered
	errors  atomic.Uint64 // requests that failed
	proxies atomic.Uint64 // answers that named a proxy
}

func (l *load) run(ctx context.Context) {
	if l.rate == 0 {
		return
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var owed float64
	var list strings.Builder
	next := 0 // the node the next request goes to
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		owed += float64(l.rate) / 10
		for owed >= 1 && ctx.Err() == nil {
			n := min(perRequest, int(owed))
			owed -= float64(n)
			list.Reset()
			for i := range n {
				if i > 0 {
					list.WriteByte(',')
				}
				list.WriteString(addrsample.In(l.nets[rng.IntN(len(l.nets))], rng).String())
			}
			l.query(ctx, client, l.bases[next], list.String(), n)
			next = (next + 1) % len(l.bases)
		}
		if owed > float64(l.rate) {
			owed = float64(l.rate) // the node is slower than the rate: do not build a backlog
		}
	}
}

var proxyYes = []byte(`"proxy":"yes"`)

func (l *load) query(ctx context.Context, client *http.Client, base, ips string, n int) {
	body := url.Values{"ips": {ips}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/?vpn=1&asn=1", strings.NewReader(body))
	if err != nil {
		l.errors.Add(1)
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.errors.Add(1)
		}
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		l.errors.Add(1)
		return
	}
	l.queries.Add(uint64(n))
	l.proxies.Add(uint64(bytes.Count(bytes.ReplaceAll(b, []byte(" "), nil), proxyYes)))
}
