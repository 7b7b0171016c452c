package integration

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/worker"
)

// Two workers follow the verdict log into their history tables: after
// verdicts (made by the workers themselves, for a node's sightings) and
// attack reports (posted to the node) arrive, both compute the same
// history features for an address of that /24, never seen before or seen.
// A third worker started afterwards (a restarted worker) rebuilds the same
// table from what the log holds.
func TestWorkersFoldTheSameHistory(t *testing.T) {
	db := openDB(t)
	// A /24 inside an anonymous-proxy network (the rule calls its
	// addresses proxies), and, in another AS, addresses for the warm-up.
	var target, warm locdb.Network
	for n := range db.Networks() {
		switch {
		case !n.Prefix.Addr().Is4() || n.ASN == 0 || n.Prefix.Bits() > 24:
		case target.ASN == 0 && n.Flags.AnonymousProxy():
			target = n
		case warm.ASN == 0 && n.Flags == 0 && n.Prefix.Bits() <= 16:
			warm = n
		}
		if target.ASN != 0 && warm.ASN != 0 && target.ASN != warm.ASN {
			break
		}
	}
	if target.ASN == 0 || warm.ASN == 0 || target.ASN == warm.ASN {
		t.Fatalf("no suitable networks (%v, %v)", target.Prefix, warm.Prefix)
	}

	c := newCluster(t, nil)
	var ws []*worker.Worker
	for _, id := range []string{"w1", "w2"} {
		ws = append(ws, c.addWorkerWith(id, func(cfg *worker.Config) {
			cfg.EngineName, cfg.DBPath, cfg.SkipVerify, cfg.Capacity = worker.EngineRule, locdb.DefaultPath, true, 2
			cfg.FollowModels = false
		}))
	}
	tables := []*history.Table{ws[0].History(), ws[1].History()}
	if tables[0] == nil || tables[1] == nil {
		t.Fatal("a worker has no history table")
	}
	node := startAttackNode(t, c, db, "node-h", t.TempDir())
	defer node.stop(t)

	// Warm-up: a fresh address a round until both workers have folded one.
	wa := warm.Prefix.Addr()
	testwait.For(t, time.Minute, "both workers following the log", func() bool {
		wa = wa.Next()
		node.Submit(wa)
		time.Sleep(100 * time.Millisecond)
		_, ok0 := tables[0].Entry(wa)
		_, ok1 := tables[1].Entry(wa)
		return ok0 && ok1
	})

	// Ten addresses of the target /24 are examined; three of them and one
	// more are reported for attacks.
	base := target.Prefix.Addr()
	var addrs []netip.Addr
	for i := range 10 {
		b := base.As4()
		b[3] = byte(10 + i)
		addrs = append(addrs, netip.AddrFrom4(b))
	}
	if n := node.Submit(addrs...); n != len(addrs) {
		t.Fatalf("%d of %d sightings submitted", n, len(addrs))
	}
	at := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	var lines []string
	for i, a := range []netip.Addr{addrs[0], addrs[0], addrs[1], addrs[2]} {
		kind := []string{"login", "scan", "login", "ddos"}[i]
		lines = append(lines, fmt.Sprintf("%s,%d,%s", a, at.Unix()+int64(i), kind))
	}
	seen := addrs[0]
	fresh := func() netip.Addr { b := base.As4(); b[3] = 200; return netip.AddrFrom4(b) }()
	if ans := postAttacks(t, node, strings.Join(lines, "\n")+"\n"); ans["new"] != 4.0 {
		t.Fatalf("attack answer %v", ans)
	}

	want := history.Counts{Verdicts: 10, Proxies: 10, Attacks: 4}
	for i, tb := range tables {
		testwait.For(t, time.Minute, fmt.Sprintf("worker %d's history of %s", i+1, target.Prefix), func() bool {
			return tb.Bucket(history.BucketKey(fresh)) == want
		})
	}
	var vecs [][]float32
	for _, tb := range tables {
		for _, a := range []netip.Addr{fresh, seen} {
			x := make([]float32, features.CountHistory)
			features.WriteHistory(tb.Lookup(a, target.ASN), x)
			vecs = append(vecs, x[features.Count:])
		}
	}
	if !slices.Equal(vecs[0], vecs[2]) || !slices.Equal(vecs[1], vecs[3]) {
		t.Fatalf("the workers' history features differ:\nw1 %v %v\nw2 %v %v", vecs[0], vecs[1], vecs[2], vecs[3])
	}
	s := tables[0].Lookup(seen, target.ASN)
	if s.Attacks != 2 || s.Kinds != 2 || s.Bucket != (history.Counts{Verdicts: 9, Proxies: 9, Attacks: 2}) {
		t.Fatalf("%s (its own verdict and reports left out of its bucket): %+v", seen, s)
	}
	if f := tables[0].Lookup(fresh, target.ASN); f.Attacks != 0 || f.Bucket != want || f.AS.Verdicts < 10 {
		t.Fatalf("%s (never seen): %+v", fresh, f)
	}
	t.Logf("history features of %s on both workers: %v; of %s: %v", fresh, vecs[0], seen, vecs[1])

	late := c.addWorkerWith("w3", func(cfg *worker.Config) {
		cfg.EngineName, cfg.DBPath, cfg.SkipVerify, cfg.Capacity = worker.EngineRule, locdb.DefaultPath, true, 2
		cfg.FollowModels = false
	}).History()
	testwait.For(t, time.Minute, "the late worker's history of "+target.Prefix.String(), func() bool {
		return late.Bucket(history.BucketKey(fresh)) == want && late.Sizes().Addrs == tables[0].Sizes().Addrs
	})
	for i, a := range []netip.Addr{fresh, seen} {
		x := make([]float32, features.CountHistory)
		features.WriteHistory(late.Lookup(a, target.ASN), x)
		if !slices.Equal(x[features.Count:], vecs[i]) {
			t.Fatalf("the late worker's features of %s %v, want %v", a, x[features.Count:], vecs[i])
		}
	}
	entries := func(tb *history.Table) map[netip.Addr]history.Entry {
		out := map[netip.Addr]history.Entry{}
		tb.Each(func(e history.Entry) bool { out[e.Addr] = e; return true })
		return out
	}
	if got, want := entries(late), entries(tables[0]); !reflect.DeepEqual(got, want) {
		t.Fatalf("the late worker's table (%d addresses) differs from its peer's (%d)", len(got), len(want))
	}
}
