package locdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// Default locations of the database and of the public key it is signed with.
const (
	DefaultPath    = "/usr/share/libloc-location/location.db"
	DefaultKeyPath = "/var/lib/location/signing-key.pem"
)

// Attribution is the credit the data licence requires wherever data from the
// database is shown.
const Attribution = "IPFire Location database, https://location.ipfire.org/, CC BY-SA 4.0"

var (
	// ErrCorrupt is wrapped by every error about the content of the file:
	// bad magic or version, a section outside the file, a string offset
	// outside the string pool, a truncated file.
	ErrCorrupt = errors.New("corrupt location database")
	// ErrBadSignature is wrapped when neither signature slot verifies with
	// the configured key (including when the file is not signed at all).
	ErrBadSignature = errors.New("location database signature does not verify")
)

// Config says which database to open and how to trust it.
type Config struct {
	// Path of the database file. Required.
	Path string
	// KeyPath is the PEM file holding the ECDSA public key the database is
	// signed with; "" means DefaultKeyPath.
	KeyPath string
	// SkipVerify skips the signature check, which reads and hashes the
	// whole file (about 60 ms for the full database).
	SkipVerify bool
	// NoIndex skips the lookup index that Open otherwise builds in the
	// background (see the package documentation): lookups then always walk
	// the trie. For processes that do a few lookups and exit, or that
	// cannot spare its memory.
	NoIndex bool
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("locdb: config: Path is required")
	}
	return nil
}

func (c Config) keyPath() string {
	if c.KeyPath == "" {
		return DefaultKeyPath
	}
	return c.KeyPath
}

// DB is an open, memory-mapped location database. Lookup, LookupBatch,
// WaitIndex and the accessors are safe for concurrent use; Close must not
// run concurrently with them.
//
// The file must be replaced atomically (write a new file, rename it over the
// old one), never rewritten or truncated in place while open: the mapping
// would then see the new bytes, or fault on the missing ones.
type DB struct {
	data    []byte // the whole mapping; nil once closed
	cleanup runtime.Cleanup

	tree      []byte // nodeCount * format.NodeSize bytes
	nodeCount uint32
	networks  []byte // netCount * format.NetworkSize bytes
	netCount  uint32
	pool      []byte // the string pool, in the mapping

	// as holds the AS records sorted by number (the file's section, or a
	// sorted copy if the file broke the order); asTop the number of every
	// asBlock-th record. A lookup searches the small asTop, which stays in
	// cache, then a single cache line of as.
	as    []byte
	asTop []uint32

	countries  []country
	countryIdx [codeRange * codeRange]int16 // code slot -> index in countries, -1 if none

	// IPv4 starts: v4Node is the node of ::ffff:0:0/96 (0 if the trie has no
	// such path), v4Best/v4Depth the deepest network on the way there; jump
	// continues from the first jumpBits of the IPv4 address (nil when the
	// trie has no IPv4 part or too many networks to pack).
	v4Node      uint32
	v4Best      uint32
	v4BestDepth uint8
	jump        []uint64

	// index is the lookup index once built (nil before, or for none);
	// indexDone is closed when its build has ended, indexStop asks it to
	// end early.
	index     atomic.Pointer[index]
	indexStop atomic.Bool
	// indexPanic records a panic of the build (the lookups then walk).
	indexPanic atomic.Value
	indexDone  chan struct{}

	createdAt                    time.Time
	vendor, description, license string
}

// country is a country record with its strings copied to the heap.
type country struct {
	code, name, continent, continentName string
}

// Open maps the database at cfg.Path read-only, validates it and, unless
// cfg.SkipVerify, verifies its signature with the key at cfg.KeyPath.
// Errors about the file's content wrap ErrCorrupt or ErrBadSignature.
func Open(cfg Config) (*DB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Refuse anything but a regular file before opening it: opening a FIFO
	// would block.
	if fi, err := os.Stat(cfg.Path); err != nil {
		return nil, fmt.Errorf("locdb: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("locdb: open %s: not a regular file", cfg.Path)
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("locdb: %w", err)
	}
	defer f.Close() // the mapping stays valid without the descriptor
	data, err := mapFile(f)
	if err != nil {
		return nil, fmt.Errorf("locdb: open %s: %w", cfg.Path, err)
	}
	db := &DB{data: data}
	if err := db.init(cfg, f); err != nil {
		_ = unix.Munmap(data)
		return nil, fmt.Errorf("locdb: open %s: %w", cfg.Path, err)
	}
	// A DB that is dropped without Close still releases its mapping (the
	// index build holds the DB until it ends).
	db.cleanup = runtime.AddCleanup(db, func(m []byte) { _ = unix.Munmap(m) }, data)
	if cfg.NoIndex {
		db.indexDone = make(chan struct{})
		close(db.indexDone)
	} else {
		db.startIndex()
	}
	return db, nil
}

func mapFile(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	size := fi.Size()
	if size < format.HeaderSize {
		return nil, fmt.Errorf("%d bytes, shorter than the %d-byte header: %w", size, format.HeaderSize, ErrCorrupt)
	}
	if uint64(size) > math.MaxInt {
		return nil, fmt.Errorf("%d bytes is too large to map", size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return data, nil
}

// corrupt formats a content error wrapping ErrCorrupt.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func (db *DB) init(cfg Config, f *os.File) error {
	d := db.data
	if string(d[:len(format.Magic)]) != format.Magic {
		return corrupt("bad magic %q", d[:len(format.Magic)])
	}
	if v := d[format.OffVersion]; v != format.Version {
		return corrupt("unsupported format version %d", v)
	}

	// Every section must lie inside the file and, unless empty, after the
	// header: the signature slots are not signed, so no data may live there.
	section := func(name string, off, recSize int) ([]byte, error) {
		start, length := uint64(be32(d[off:])), uint64(be32(d[off+4:]))
		if start+length > uint64(len(d)) {
			return nil, corrupt("%s section [%d, +%d) ends past the end of the %d-byte file", name, start, length, len(d))
		}
		if length == 0 {
			return nil, nil
		}
		if start < format.HeaderSize {
			return nil, corrupt("%s section at %d overlaps the header", name, start)
		}
		if recSize > 0 && length%uint64(recSize) != 0 {
			return nil, corrupt("%s section length %d is not a multiple of %d", name, length, recSize)
		}
		return d[start : start+length : start+length], nil
	}
	asSec, err := section("AS", format.OffAS, format.ASSize)
	if err != nil {
		return err
	}
	if db.networks, err = section("network", format.OffNetworks, format.NetworkSize); err != nil {
		return err
	}
	if db.tree, err = section("tree", format.OffTree, format.NodeSize); err != nil {
		return err
	}
	countrySec, err := section("country", format.OffCountries, format.CountrySize)
	if err != nil {
		return err
	}
	if db.pool, err = section("string pool", format.OffPool, 0); err != nil {
		return err
	}
	// Lengths are u32, so the counts fit; NoNetwork must stay out of range.
	db.nodeCount = uint32(len(db.tree) / format.NodeSize)
	db.netCount = uint32(len(db.networks) / format.NetworkSize)
	if db.netCount == format.NoNetwork {
		return corrupt("%d networks is more than the format can address", db.netCount)
	}
	sig1Len, sig2Len := int(be16(d[format.OffSig1Len:])), int(be16(d[format.OffSig2Len:]))
	if sig1Len > format.MaxSigLen || sig2Len > format.MaxSigLen {
		return corrupt("signature lengths %d and %d exceed %d", sig1Len, sig2Len, format.MaxSigLen)
	}

	if !cfg.SkipVerify {
		sigs := [][]byte{
			d[format.OffSig1 : format.OffSig1+sig1Len],
			d[format.OffSig2 : format.OffSig2+sig2Len],
		}
		if err := verify(cfg.keyPath(), f, int64(len(d)), sigs); err != nil {
			return err
		}
	}

	if db.vendor, err = db.headerString("vendor", format.OffVendor); err != nil {
		return err
	}
	if db.description, err = db.headerString("description", format.OffDescription); err != nil {
		return err
	}
	if db.license, err = db.headerString("license", format.OffLicense); err != nil {
		return err
	}
	db.createdAt = time.Unix(int64(binary.BigEndian.Uint64(d[format.OffCreatedAt:])), 0).UTC()

	if err := db.indexAS(asSec); err != nil {
		return err
	}
	if err := db.indexCountries(countrySec); err != nil {
		return err
	}
	db.buildIPv4Start()
	return nil
}

// poolString returns the NUL-terminated string at off (bounded by the end of
// the pool) as a view into the mapping; ok is false when off lies outside
// the pool.
func (db *DB) poolString(off uint32) (s string, ok bool) {
	if uint64(off) >= uint64(len(db.pool)) {
		return "", false
	}
	b := db.pool[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return unsafeString(b), true
}

// headerString returns a heap copy of the header string at off.
func (db *DB) headerString(name string, off int) (string, error) {
	o := be32(db.data[off:])
	s, ok := db.poolString(o)
	if !ok && !(o == 0 && len(db.pool) == 0) {
		return "", corrupt("%s at pool offset %d outside the %d-byte string pool", name, o, len(db.pool))
	}
	return strings.Clone(s), nil
}

// asBlock AS records of 8 bytes fill one 64-byte cache line.
const asBlock = 8

// indexAS checks the AS records (name offsets inside the pool, order) and
// samples them for asName. An unsorted section is copied and sorted.
func (db *DB) indexAS(sec []byte) error {
	n := len(sec) / format.ASSize
	db.as = sec
	sorted := true
	prev := uint32(0)
	for i := range n {
		rec := sec[i*format.ASSize : (i+1)*format.ASSize]
		num, off := be32(rec), be32(rec[4:])
		if uint64(off) >= uint64(len(db.pool)) {
			return corrupt("AS%d name at pool offset %d outside the %d-byte string pool", num, off, len(db.pool))
		}
		sorted = sorted && num >= prev
		prev = num
	}
	if !sorted {
		db.as = sortedAS(sec) // the format promises order; cope rather than miss names
	}
	db.asTop = make([]uint32, (n+asBlock-1)/asBlock)
	for i := range db.asTop {
		db.asTop[i] = be32(db.as[i*asBlock*format.ASSize:])
	}
	return nil
}

// sortedAS returns a copy of an AS section sorted by number (stable, so the
// first of duplicate records still wins).
func sortedAS(sec []byte) []byte {
	n := len(sec) / format.ASSize
	recs := make([][format.ASSize]byte, n)
	for i := range recs {
		copy(recs[i][:], sec[i*format.ASSize:])
	}
	slices.SortStableFunc(recs, func(a, b [format.ASSize]byte) int {
		x, y := be32(a[:]), be32(b[:])
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	out := make([]byte, 0, len(sec))
	for _, r := range recs {
		out = append(out, r[:]...)
	}
	return out
}

func (db *DB) indexCountries(sec []byte) error {
	for i := range db.countryIdx {
		db.countryIdx[i] = -1
	}
	n := len(sec) / format.CountrySize
	if n > math.MaxInt16 {
		return corrupt("%d countries is more than a two-letter code can name", n)
	}
	db.countries = make([]country, 0, n)
	for i := range n {
		rec := sec[i*format.CountrySize : (i+1)*format.CountrySize]
		nameOff := be32(rec[4:])
		name, ok := db.poolString(nameOff)
		if !ok {
			return corrupt("country %q name at pool offset %d outside the %d-byte string pool", rec[:2], nameOff, len(db.pool))
		}
		slot := codeIndex(rec[0], rec[1])
		if slot < 0 || db.countryIdx[slot] >= 0 {
			continue // unprintable code, or a duplicate: the first record wins
		}
		c := country{code: codeString(slot), name: strings.Clone(name)}
		if cs := codeIndex(rec[2], rec[3]); cs >= 0 {
			c.continent = codeString(cs)
			c.continentName = ContinentName(c.continent)
		}
		db.countryIdx[slot] = int16(len(db.countries))
		db.countries = append(db.countries, c)
	}
	return nil
}

// Close stops the index build if it still runs, waits for it and unmaps
// the database. Lookup on a closed DB reports no match. Close is
// idempotent. ASName strings returned earlier become invalid (see
// Network); every other string stays valid.
func (db *DB) Close() error {
	if db.data == nil {
		return nil
	}
	db.indexStop.Store(true)
	<-db.indexDone
	db.index.Store(nil)
	db.cleanup.Stop()
	data := db.data
	db.data, db.tree, db.networks, db.pool, db.as, db.asTop = nil, nil, nil, nil, nil, nil
	db.nodeCount, db.netCount, db.v4Node, db.v4Best, db.jump = 0, 0, 0, format.NoNetwork, nil
	if err := unix.Munmap(data); err != nil {
		return fmt.Errorf("locdb: munmap: %w", err)
	}
	return nil
}

// CreatedAt is when the database was built.
func (db *DB) CreatedAt() time.Time { return db.createdAt }

// Vendor is the database's vendor string.
func (db *DB) Vendor() string { return db.vendor }

// Description is the database's description string.
func (db *DB) Description() string { return db.description }

// License is the database's licence string.
func (db *DB) License() string { return db.license }

// NetworkCount is the number of network records in the file.
func (db *DB) NetworkCount() int { return int(db.netCount) }
