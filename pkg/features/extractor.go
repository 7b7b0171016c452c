package features

import (
	"cmp"
	"encoding/binary"
	"errors"
	"iter"
	"math"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/raven"
)

// Bucket sizes of the neighbourhood statistics. A network belongs to the
// buckets that contain its first address.
const (
	WideBitsV4   = 16
	NarrowBitsV4 = 24
	WideBitsV6   = 32
	NarrowBitsV6 = 48
)

// Source is what an Extractor is built from and looks addresses up in; a
// *locdb.DB is one. Lookup must not allocate for Extract not to.
type Source interface {
	Lookup(addr netip.Addr) (locdb.Network, bool)
	Networks() iter.Seq[locdb.Network]
}

// asStat is what the index knows about one AS.
type asStat struct {
	nets, anon, drop, anycast, sat uint32
	v6nets                         uint32
	countries                      uint32
	v4addrsLog2                    float32
	// name is the AS name its networks carry and hosting whether it looks
	// like a hosting provider's: raven.HostingName costs more than every
	// other feature together, so it is tested once an AS.
	name    string
	hosting bool
}

// bucketStat is what the index knows about one bucket.
type bucketStat struct {
	nets, anon, drop, asns uint32
}

// buckets is a sorted table of bucket keys and their statistics, as the
// index is built.
type buckets struct {
	keys  []uint64
	stats []bucketStat
}

// flagged is a sorted list of the starts (IPv4: 32 bits; IPv6: the top 64
// bits) of the networks that carry one flag, with their prefix lengths so
// that a network can leave itself out.
type flagged struct {
	starts []uint64
	bits   []uint8
}

// Extractor computes feature vectors. Build it once with NewExtractor; it
// is read-only afterwards and safe for concurrent use.
type Extractor struct {
	src Source

	as table[asStat] // by ASN

	wide4, narrow4, wide6, narrow6 table[bucketStat] // by bucket key

	anon4, anon6, drop4, drop6 flagged

	country [26 * 26]struct{ nets, anon, drop uint32 }

	// A fold extractor (NewFoldExtractor) indexes only the networks for
	// which out is false, and scales its counts by scale.
	out   func(locdb.Network) bool
	scale float32

	stats BuildStats
}

// BuildStats describes the index an Extractor built.
type BuildStats struct {
	Networks      int           // networks read from the database
	ASes          int           // distinct ASNs (0 excluded)
	Buckets       int           // buckets over all four tables
	IndexBytes    int           // approximate heap size of the index
	BuildTime     time.Duration // time NewExtractor took
	AnonNets      int           // networks flagged anonymous proxy
	DropNets      int           // networks flagged drop
	IPv4          int           // IPv4 networks
	IPv6          int           // IPv6 networks
	WiderThanWide int           // networks wider than their wide bucket (counted in its first one only)
}

// NewExtractor builds the index from every network of src, normally an
// open *locdb.DB, which must stay open while the Extractor is used. On the
// real database (1.29 M networks) see Stats for the time and memory it
// takes (docs/trainer.md quotes them).
func NewExtractor(src Source) (*Extractor, error) {
	return newExtractor(src, nil, 1)
}

// NewFoldExtractor builds an index of the networks of src for which out
// returns false: the trainer's out-of-fold statistics. A training example
// whose network is out gets features from the others only, so neither its
// own label nor those of its fold-mates can shift them (plain leave-one-out
// would: within an AS, a flagged network sees one flagged neighbour fewer
// than an unflagged one, a difference a model can learn to decode). Every
// count of other networks is multiplied by countScale (k/(k-1) for k folds)
// to match the full index in expectation. A network that is not out is
// left out as in NewExtractor.
func NewFoldExtractor(src Source, out func(locdb.Network) bool, countScale float32) (*Extractor, error) {
	if out == nil || !(countScale >= 1) {
		return nil, errors.New("features: a fold extractor needs an out function and a count scale >= 1")
	}
	return newExtractor(src, out, countScale)
}

func newExtractor(src Source, out func(locdb.Network) bool, scale float32) (*Extractor, error) {
	if src == nil {
		return nil, errors.New("features: nil database")
	}
	start := time.Now()
	ex := &Extractor{src: src, out: out, scale: scale}

	type asPair struct {
		asn     uint32
		country uint16
	}
	type bucketPair struct {
		key uint64
		asn uint32
	}
	asByNum := map[uint32]*asStat{}
	asCountries := make([]asPair, 0, 1<<16)
	var w4, w6 []bucketPair
	var accum = func(m map[uint64]*bucketStat, key uint64, f locdb.Flags) {
		s := m[key]
		if s == nil {
			s = &bucketStat{}
			m[key] = s
		}
		s.nets++
		if f.AnonymousProxy() {
			s.anon++
		}
		if f.Drop() {
			s.drop++
		}
	}
	mw4, mn4, mw6, mn6 := map[uint64]*bucketStat{}, map[uint64]*bucketStat{}, map[uint64]*bucketStat{}, map[uint64]*bucketStat{}

	for n := range src.Networks() {
		if out != nil && out(n) {
			continue
		}
		ex.stats.Networks++
		f := n.Flags
		if f.AnonymousProxy() {
			ex.stats.AnonNets++
		}
		if f.Drop() {
			ex.stats.DropNets++
		}
		v6 := !n.Prefix.Addr().Is4()
		start, wk, nk := keys(n.Prefix)
		if v6 {
			ex.stats.IPv6++
			accum(mw6, wk, f)
			accum(mn6, nk, f)
			w6 = append(w6, bucketPair{wk, n.ASN})
			if n.Prefix.Bits() < WideBitsV6 {
				ex.stats.WiderThanWide++
			}
		} else {
			ex.stats.IPv4++
			accum(mw4, wk, f)
			accum(mn4, nk, f)
			w4 = append(w4, bucketPair{wk, n.ASN})
			if n.Prefix.Bits() < WideBitsV4 {
				ex.stats.WiderThanWide++
			}
		}
		if f.AnonymousProxy() {
			if v6 {
				ex.anon6.add(start, n.Prefix.Bits())
			} else {
				ex.anon4.add(start, n.Prefix.Bits())
			}
		}
		if f.Drop() {
			if v6 {
				ex.drop6.add(start, n.Prefix.Bits())
			} else {
				ex.drop4.add(start, n.Prefix.Bits())
			}
		}
		if ci := countryIndex(n.Country); ci >= 0 {
			c := &ex.country[ci]
			c.nets++
			if f.AnonymousProxy() {
				c.anon++
			}
			if f.Drop() {
				c.drop++
			}
		}
		if n.ASN == 0 {
			continue
		}
		s := asByNum[n.ASN]
		if s == nil {
			s = &asStat{name: n.ASName, hosting: raven.HostingName(n.ASName)}
			asByNum[n.ASN] = s
		}
		s.nets++
		if f.AnonymousProxy() {
			s.anon++
		}
		if f.Drop() {
			s.drop++
		}
		if f.Anycast() {
			s.anycast++
		}
		if f.SatelliteProvider() {
			s.sat++
		}
		if v6 {
			s.v6nets++
		} else {
			// v4addrsLog2 holds the address count until the end.
			s.v4addrsLog2 += float32(uint64(1) << (32 - n.Prefix.Bits()))
		}
		if ci := countryIndex(n.Country); ci >= 0 {
			asCountries = append(asCountries, asPair{n.ASN, uint16(ci)})
		}
	}

	// AS table, with distinct countries from the sorted pairs.
	asns := make([]uint64, 0, len(asByNum))
	for asn := range asByNum {
		asns = append(asns, uint64(asn))
	}
	slices.Sort(asns)
	as := make([]asStat, len(asns))
	for i, asn := range asns {
		s := *asByNum[uint32(asn)]
		s.v4addrsLog2 = float32(math.Log2(1 + float64(s.v4addrsLog2)))
		as[i] = s
	}
	slices.SortFunc(asCountries, func(a, b asPair) int {
		return cmp.Or(cmp.Compare(a.asn, b.asn), cmp.Compare(a.country, b.country))
	})
	asCountries = slices.Compact(asCountries)
	for _, p := range asCountries {
		if i, ok := slices.BinarySearch(asns, uint64(p.asn)); ok {
			as[i].countries++
		}
	}
	ex.as = newTable(asns, as)

	// Bucket tables, with distinct ASNs for the wide ones.
	wide4, narrow4, wide6, narrow6 := sortedBuckets(mw4), sortedBuckets(mn4), sortedBuckets(mw6), sortedBuckets(mn6)
	countASNs := func(b *buckets, pairs []bucketPair) {
		slices.SortFunc(pairs, func(a, b bucketPair) int {
			return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.asn, b.asn))
		})
		pairs = slices.Compact(pairs)
		j := 0
		for _, p := range pairs {
			for b.keys[j] != p.key {
				j++
			}
			if p.asn != 0 {
				b.stats[j].asns++
			}
		}
	}
	countASNs(&wide4, w4)
	countASNs(&wide6, w6)
	ex.wide4, ex.narrow4 = newTable(wide4.keys, wide4.stats), newTable(narrow4.keys, narrow4.stats)
	ex.wide6, ex.narrow6 = newTable(wide6.keys, wide6.stats), newTable(narrow6.keys, narrow6.stats)
	for _, f := range []*flagged{&ex.anon4, &ex.anon6, &ex.drop4, &ex.drop6} {
		f.sort()
	}

	ex.stats.ASes = ex.as.len()
	ex.stats.Buckets = ex.wide4.len() + ex.narrow4.len() + ex.wide6.len() + ex.narrow6.len()
	bucketSize := unsafe.Sizeof(entry[bucketStat]{})
	ex.stats.IndexBytes = ex.as.bytes(unsafe.Sizeof(entry[asStat]{})) +
		ex.wide4.bytes(bucketSize) + ex.narrow4.bytes(bucketSize) + ex.wide6.bytes(bucketSize) + ex.narrow6.bytes(bucketSize) +
		(len(ex.anon4.starts)+len(ex.anon6.starts)+len(ex.drop4.starts)+len(ex.drop6.starts))*9 +
		int(unsafe.Sizeof(ex.country))
	ex.stats.BuildTime = time.Since(start)
	return ex, nil
}

// SchemaVersion is the feature schema the Extractor writes (SchemaVersion).
func (ex *Extractor) SchemaVersion() int { return SchemaVersion }

// NumFeatures is the length of the vectors it writes (Count).
func (ex *Extractor) NumFeatures() int { return Count }

// Stats describes the built index.
func (ex *Extractor) Stats() BuildStats { return ex.stats }

func sortedBuckets(m map[uint64]*bucketStat) buckets {
	b := buckets{keys: make([]uint64, 0, len(m))}
	for k := range m {
		b.keys = append(b.keys, k)
	}
	slices.Sort(b.keys)
	b.stats = make([]bucketStat, len(b.keys))
	for i, k := range b.keys {
		b.stats[i] = *m[k]
	}
	return b
}

func (f *flagged) add(start uint64, bits int) {
	f.starts = append(f.starts, start)
	f.bits = append(f.bits, uint8(bits))
}

func (f *flagged) sort() {
	idx := make([]int, len(f.starts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(f.starts[a], f.starts[b]), cmp.Compare(f.bits[a], f.bits[b]))
	})
	s, b := make([]uint64, len(idx)), make([]uint8, len(idx))
	for i, j := range idx {
		s[i], b[i] = f.starts[j], f.bits[j]
	}
	f.starts, f.bits = s, b
}

// nearestLog2 returns log2(1+d) for the distance d from start to the
// nearest entry, other than (start, bits) itself when skipSelf, or Missing.
func (f *flagged) nearestLog2(start uint64, bits int, skipSelf bool) float32 {
	i := lowerBound(f.starts, start)
	best := uint64(math.MaxUint64)
	found := false
	// Entries at or after start, skipping the network itself.
	for j := i; j < len(f.starts); j++ {
		if skipSelf && f.starts[j] == start && int(f.bits[j]) == bits {
			continue
		}
		best, found = f.starts[j]-start, true
		break
	}
	if i > 0 {
		if d := start - f.starts[i-1]; !found || d < best {
			best, found = d, true
		}
	}
	if !found {
		return Missing
	}
	if best == math.MaxUint64 {
		return 64
	}
	return float32(math.Log2(1 + float64(best)))
}

// lowerBound is slices.BinarySearch's index: the first i with s[i] >= v,
// len(s) if none. Its steps are conditional moves, not branches, which the
// processor would mispredict half the time.
func lowerBound(s []uint64, v uint64) int {
	if len(s) == 0 {
		return 0
	}
	base, n := 0, len(s)
	for n > 1 {
		half := n / 2
		base += half * int(u32(s[base+half] < v))
		n -= half
	}
	return base + int(u32(s[base] < v))
}

// keys returns a prefix's start (IPv4: the 32-bit address; IPv6: the top 64
// bits) and its wide and narrow bucket keys.
func keys(p netip.Prefix) (start, wide, narrow uint64) {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		v := uint64(binary.BigEndian.Uint32(b[:]))
		return v, v >> (32 - WideBitsV4), v >> (32 - NarrowBitsV4)
	}
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	return hi, hi >> (64 - WideBitsV6), hi >> (64 - NarrowBitsV6)
}

func countryIndex(c string) int {
	if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return -1
	}
	return int(c[0]-'A')*26 + int(c[1]-'A')
}

func continentIndex(c string) float32 {
	switch c {
	case "AF":
		return 0
	case "AN":
		return 1
	case "AS":
		return 2
	case "EU":
		return 3
	case "NA":
		return 4
	case "OC":
		return 5
	case "SA":
		return 6
	}
	return Missing
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// share is part/whole, or Missing when whole is 0.
func share(part, whole uint32) float32 {
	if whole == 0 {
		return Missing
	}
	return float32(part) / float32(whole)
}

// Extract looks addr up and writes its features to dst (len(dst) >= Count).
// It returns the network found; when there is none, every feature is
// Missing and ok is false. It does not allocate.
func (ex *Extractor) Extract(addr netip.Addr, dst []float32) (n locdb.Network, ok bool) {
	n, ok = ex.src.Lookup(addr)
	if !ok {
		dst = dst[:Count]
		for i := range dst {
			dst[i] = Missing
		}
		return n, false
	}
	ex.ExtractNetwork(n, dst)
	return n, true
}

// ExtractNetwork writes the features of n, a network of the database the
// Extractor was built from (as Lookup or Networks return it), to dst,
// leaving n itself out of every statistic. It does not allocate.
func (ex *Extractor) ExtractNetwork(n locdb.Network, dst []float32) {
	x := dst[:Count]
	f := n.Flags
	selfAnon, selfDrop, self := u32(f.AnonymousProxy()), u32(f.Drop()), uint32(1)
	if ex.out != nil && ex.out(n) {
		selfAnon, selfDrop, self = 0, 0, 0 // not in the index
	}
	k := ex.scale
	v6 := !n.Prefix.Addr().Is4()
	bits := n.Prefix.Bits()
	start, wk, nk := keys(n.Prefix)

	x[IsIPv6] = b2f(v6)
	x[PrefixLen] = float32(bits)
	x[Continent] = continentIndex(n.Continent)
	ci := countryIndex(n.Country)
	x[CountryCode] = float32(ci)
	if ci < 0 {
		x[CountryCode] = Missing
	}
	x[FlagSatellite] = b2f(f.SatelliteProvider())
	x[FlagAnycast] = b2f(f.Anycast())
	x[ASNumber] = float32(n.ASN)
	x[HasASN] = b2f(n.ASN != 0)
	x[ASNamed] = b2f(n.ASName != "")

	if s := ex.as.find(uint64(n.ASN)); s != nil && n.ASN != 0 {
		if n.ASName == s.name { // the same bytes, normally: a comparison of pointers
			x[ASHostingName] = b2f(s.hosting)
		} else {
			x[ASHostingName] = b2f(raven.HostingName(n.ASName))
		}
		others := sub(s.nets, self)
		anon, drop := sub(s.anon, selfAnon), sub(s.drop, selfDrop)
		x[ASNetworks] = k * float32(others)
		x[ASV4AddrsLog2] = s.v4addrsLog2
		x[ASV6Networks] = k * float32(s.v6nets)
		x[ASCountries] = float32(s.countries)
		x[ASAnonOthers] = k * float32(anon)
		x[ASDropOthers] = k * float32(drop)
		x[ASAnonShare] = share(anon, others)
		x[ASDropShare] = share(drop, others)
		x[ASAnycastShare] = share(s.anycast, s.nets)
		x[ASSatelliteShare] = share(s.sat, s.nets)
	} else {
		x[ASHostingName] = b2f(raven.HostingName(n.ASName))
		for _, k := range [...]int{ASNetworks, ASV4AddrsLog2, ASV6Networks, ASCountries, ASAnonOthers, ASDropOthers, ASAnonShare, ASDropShare, ASAnycastShare, ASSatelliteShare} {
			x[k] = Missing
		}
	}

	wide, narrow, anonList, dropList := &ex.wide4, &ex.narrow4, &ex.anon4, &ex.drop4
	if v6 {
		wide, narrow, anonList, dropList = &ex.wide6, &ex.narrow6, &ex.anon6, &ex.drop6
	}
	var ws, ns bucketStat // a network the index never saw: zero
	if s := wide.find(wk); s != nil {
		ws = *s
	}
	if s := narrow.find(nk); s != nil {
		ns = *s
	}
	ex.bucketFeatures(x[WideNetworks:], ws, self, selfAnon, selfDrop, true)
	ex.bucketFeatures(x[NarrowNetworks:], ns, self, selfAnon, selfDrop, false)

	x[NearAnonLog2] = anonList.nearestLog2(start, bits, selfAnon == 1)
	x[NearDropLog2] = dropList.nearestLog2(start, bits, selfDrop == 1)

	if ci >= 0 {
		c := &ex.country[ci]
		others := sub(c.nets, self)
		x[CountryNetworks] = k * float32(others)
		x[CountryAnonShare] = share(sub(c.anon, selfAnon), others)
		x[CountryDropShare] = share(sub(c.drop, selfDrop), others)
	} else {
		x[CountryNetworks], x[CountryAnonShare], x[CountryDropShare] = Missing, Missing, Missing
	}
}

// bucketFeatures writes a bucket's features, in the order of the Wide*
// (withASNs) or Narrow* block, leaving the network itself out. A network
// always lies in its own buckets, so s.nets >= 1 for a database network;
// a zero stat (a network the index never saw) gives counts of 0.
func (ex *Extractor) bucketFeatures(x []float32, s bucketStat, self, selfAnon, selfDrop uint32, withASNs bool) {
	others, anon, drop := sub(s.nets, self), sub(s.anon, selfAnon), sub(s.drop, selfDrop)
	k := ex.scale
	i := 0
	x[i] = k * float32(others)
	i++
	if withASNs {
		x[i] = float32(s.asns)
		i++
	}
	x[i], x[i+1] = k*float32(anon), k*float32(drop)
	x[i+2], x[i+3] = share(anon, others), share(drop, others)
}

func sub(a, b uint32) uint32 {
	if a < b {
		return 0
	}
	return a - b
}

func u32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
