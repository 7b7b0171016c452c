package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var (
	bucketVerdicts = []byte("verdicts")
	bucketSeen     = []byte("seen")
	bucketMeta     = []byte("meta")

	keySightingHWM = []byte("sighting_hwm")
	// keyLogCursor prefixes a verdict log stream's cursor: "log_seq/<stream>".
	keyLogCursor = "log_seq/"
)

// initialMmapSize is the address space bbolt maps at open (not memory:
// pages are read in as used). While the file fits, a write transaction
// that grows it need not remap, and a remap both waits for every read
// transaction and blocks new ones (the query path's lookups), and copies
// every key the transaction holds. Larger files remap as before.
const initialMmapSize = 1 << 30

// Defaults for Config.
const (
	DefaultTouchMax      = 200_000
	DefaultFlushInterval = 5 * time.Second
)

// Config configures a Store.
type Config struct {
	// Path of the bbolt file; created when missing.
	Path string
	// TouchMax bounds the last-seen times held between flushes; beyond it
	// touches of new addresses are dropped and counted; a full table is
	// flushed at once. Default 200,000.
	TouchMax int
	// FlushInterval is how often Run writes the held last-seen times, and
	// so how many are lost in a crash. An address asked many times in one
	// interval is written once, and each flush rewrites the pages of the
	// addresses it holds: a longer interval costs less. Default 5 s.
	FlushInterval time.Duration
	// AttackEvents bounds the reports kept per address. Default 100.
	AttackEvents int
	// OutboxMax bounds the attack reports waiting to be forwarded to the
	// leader. Default 1,000,000.
	OutboxMax int
	// OnVerdicts, when set, is called after every Put or ApplyLog that
	// changed the store, with each verdict that did, in write order,
	// outside the transaction. Calls arrive in commit order (see
	// OnAttacks). It must not block nor call back into the store's
	// writers.
	OnVerdicts func([]Landed)
	// OnAttacks, when set, is called after every AddAttacks or ApplyLog
	// that counted new attack reports, with those reports in the order
	// they were applied, outside the transaction (after OnVerdicts for an
	// ApplyLog). With either hook set, a write and its hooks hold a mutex
	// together, so that the hooks see the writes in commit order: what
	// they fold ends as what the store holds. The same rules as
	// OnVerdicts apply.
	OnAttacks func([]attacks.Report)
	// Retention is how long verdicts, attack histories and last-seen
	// times are kept (see Sweep); the zero Retention keeps everything.
	Retention Retention
	// SweepEvery is how often Run deletes what Retention no longer keeps
	// (it also sweeps at once). Default DefaultSweepEvery, one minute.
	SweepEvery time.Duration
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("store: empty path")
	}
	if c.TouchMax < 0 {
		return fmt.Errorf("store: negative touch max %d", c.TouchMax)
	}
	if c.FlushInterval < 0 {
		return fmt.Errorf("store: negative flush interval %s", c.FlushInterval)
	}
	if c.AttackEvents < 0 || c.OutboxMax < 0 {
		return fmt.Errorf("store: negative attack events %d or outbox max %d", c.AttackEvents, c.OutboxMax)
	}
	if c.SweepEvery < 0 {
		return fmt.Errorf("store: negative sweep interval %s", c.SweepEvery)
	}
	return c.Retention.Validate()
}

// Entry is what the store knows about one address.
type Entry struct {
	Verdict    verdict.Verdict
	HasVerdict bool
	// LastSeen is the last time the address was queried here (zero when
	// never), including touches not yet flushed.
	LastSeen time.Time
}

// Landed is a verdict that changed the store, as Config.OnVerdicts gets it.
type Landed struct {
	Addr    netip.Addr // normalized (see Normalize)
	Verdict verdict.Verdict
}

// Item is one verdict to write, keyed by Addr (the verdict's own address
// field is ignored).
type Item struct {
	Addr    netip.Addr
	Verdict *styxv1.Verdict
}

// Store is the node's bbolt database. Its methods are safe for concurrent
// use.
type Store struct {
	cfg Config
	db  *bolt.DB
	log zerolog.Logger

	// hookMu serialises Put, ApplyLog and AddAttacks with their hooks
	// (only when a hook is set). Lock order: hookMu, then bbolt's writer
	// lock; mu is never held with either.
	hookMu sync.Mutex

	mu      sync.Mutex // guards touches and flushing; never held during a bbolt transaction
	touches map[[16]byte]int64
	// flushing holds the times a running Flush is writing, so that
	// LastSeen sees them until they are stored.
	flushing map[[16]byte]int64
	dropped  atomic.Uint64
	kick     chan struct{} // cap 1: the touch table is full, flush now

	flushMu sync.Mutex // one Flush at a time

	// betweenReads, when set (by tests only), runs between a last-seen
	// reader's two reads (memory and snapshot): the window in which a
	// Flush may commit and clear.
	betweenReads func()

	// verdicts may hold every address with a stored verdict (nil in a
	// read-only store: every lookup reads); verdictReads counts the
	// lookups that read bbolt.
	verdicts     *present
	verdictReads atomic.Uint64

	// expired counts what retention sweeps deleted. betweenSweepTxns,
	// when set (by tests only), runs between a sweep's read transaction
	// and the write transaction that deletes what it found.
	expired          expiredCounts
	betweenSweepTxns func()

	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the store at cfg.Path.
func Open(cfg Config, log zerolog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TouchMax == 0 {
		cfg.TouchMax = DefaultTouchMax
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.AttackEvents == 0 {
		cfg.AttackEvents = DefaultAttackEvents
	}
	if cfg.OutboxMax == 0 {
		cfg.OutboxMax = DefaultOutboxMax
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: 2 * time.Second, InitialMmapSize: initialMmapSize})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	var verdicts *present
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVerdicts, bucketSeen, bucketMeta, bucketAttacks, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		// The filter of stored verdicts: one pass over the keys.
		b := tx.Bucket(bucketVerdicts)
		verdicts = newPresent(b.Stats().KeyN)
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) == 16 {
				verdicts.add([16]byte(k))
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init %s: %w", cfg.Path, err)
	}
	return &Store{
		cfg:      cfg,
		db:       db,
		log:      logging.For(log, "store"),
		touches:  make(map[[16]byte]int64),
		kick:     make(chan struct{}, 1),
		verdicts: verdicts,
	}, nil
}

// key returns the 16-byte key of addr (IPv4 as IPv4-mapped IPv6).
func key(addr netip.Addr) [16]byte { return addr.As16() }

// Normalize returns addr as the store keys it: unmapped, without zone.
func Normalize(addr netip.Addr) netip.Addr { return addr.Unmap().WithZone("") }

// encodeVerdict returns the stored value of v: 8 bytes of inference time
// (big-endian, sign bit flipped so that byte order is time order) followed
// by the deterministic protobuf encoding of v without its address. Comparing
// two values as bytes orders them by inference time first.
func encodeVerdict(v *styxv1.Verdict) ([]byte, error) {
	c := v
	if len(v.GetAddress()) > 0 {
		// Verdicts from the log name their address; outcomes do not, and
		// need no copy.
		c = proto.CloneOf(v)
		c.Address = nil
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode verdict: %w", err)
	}
	out := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint64(out, uint64(v.GetInferredUnixNano())^(1<<63))
	return append(out, body...), nil
}

// decodeVerdict returns the verdict of a stored value (see encodeVerdict).
func decodeVerdict(b []byte) (verdict.Verdict, error) {
	if len(b) < 8 {
		return verdict.Verdict{}, fmt.Errorf("stored verdict of %d bytes", len(b))
	}
	var pv styxv1.Verdict
	if err := proto.Unmarshal(b[8:], &pv); err != nil {
		return verdict.Verdict{}, fmt.Errorf("decode verdict: %w", err)
	}
	return columns.VerdictOf(&pv), nil
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put(k, buf[:])
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// Lookup returns what the store knows about addr.
func (s *Store) Lookup(addr netip.Addr) (Entry, error) {
	addr = Normalize(addr)
	k := key(addr)
	var e Entry
	held := s.heldSeen(k) // before the snapshot: see heldSeen
	s.testBetweenReads()
	var seen int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if e.Verdict, e.HasVerdict, err = verdictTxn(tx, k); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		seen = storedSeenTxn(tx, k)
		return nil
	})
	if err != nil {
		return Entry{}, fmt.Errorf("store: lookup: %w", err)
	}
	e.LastSeen = laterSeen(held, seen)
	return e, nil
}

// LookupVerdict returns addr's stored verdict, if any: Lookup without the
// last-seen time, for the query path, which needs that time only when
// asked for it (see LastSeen).
func (s *Store) LookupVerdict(addr netip.Addr) (v verdict.Verdict, ok bool, err error) {
	addr = Normalize(addr)
	k := key(addr)
	if s.verdicts != nil && !s.verdicts.mayHave(k) {
		return verdict.Verdict{}, false, nil
	}
	s.verdictReads.Add(1)
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		if v, ok, err = verdictTxn(tx, k); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		return nil
	})
	if err != nil {
		return verdict.Verdict{}, false, fmt.Errorf("store: lookup: %w", err)
	}
	return v, ok, nil
}

// LastSeen returns the last time addr was queried here, including touches
// not yet flushed (zero when never), as Lookup does.
func (s *Store) LastSeen(addr netip.Addr) (time.Time, error) {
	addr = Normalize(addr)
	k := key(addr)
	held := s.heldSeen(k) // before the snapshot: see heldSeen
	s.testBetweenReads()
	var seen int64
	err := s.db.View(func(tx *bolt.Tx) error {
		seen = storedSeenTxn(tx, k)
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store: last seen: %w", err)
	}
	return laterSeen(held, seen), nil
}

func verdictTxn(tx *bolt.Tx, k [16]byte) (verdict.Verdict, bool, error) {
	v := tx.Bucket(bucketVerdicts).Get(k[:])
	if v == nil {
		return verdict.Verdict{}, false, nil
	}
	d, err := decodeVerdict(v)
	if err != nil {
		return verdict.Verdict{}, false, err
	}
	return d, true, nil
}

func storedSeenTxn(tx *bolt.Tx, k [16]byte) int64 {
	if v := tx.Bucket(bucketSeen).Get(k[:]); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// heldSeen returns the latest last-seen time of k held in memory (ns, 0
// when none): a touch not yet flushed, or one a running Flush is writing.
//
// A reader must call it BEFORE it opens the read transaction whose stored
// time it joins with this one. A time leaves memory only after the
// transaction that wrote it has committed (Flush clears flushing after its
// last chunk). So a time that is gone from memory when heldSeen looks was
// committed before the snapshot began, and the snapshot holds it; a time
// still in memory is returned here. In the other order, a reader could take
// its snapshot before a chunk commits and look at memory after Flush has
// cleared it, and miss the time both ways.
func (s *Store) heldSeen(k [16]byte) int64 {
	s.mu.Lock()
	held := s.touches[k]
	if t, ok := s.flushing[k]; ok && t > held {
		held = t
	}
	s.mu.Unlock()
	return held
}

// testBetweenReads runs the test hook betweenReads, if set.
func (s *Store) testBetweenReads() {
	if s.betweenReads != nil {
		s.betweenReads()
	}
}

// laterSeen is the later of two last-seen times in ns (0: none).
func laterSeen(held, stored int64) time.Time {
	if t := max(held, stored); t != 0 {
		return time.Unix(0, t)
	}
	return time.Time{}
}

// Put writes verdicts in one transaction and returns how many changed the
// store (see the package comment for the ordering rule).
func (s *Store) Put(items []Item) (changed int, err error) {
	if len(items) == 0 {
		return 0, nil
	}
	defer s.lockHooks()()
	var landed []Landed
	err = s.db.Update(func(tx *bolt.Tx) error {
		landed = landed[:0]
		changed, err = putTxn(tx, items, s.landedSink(&landed), s.verdicts)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: put %d verdicts: %w", len(items), err)
	}
	s.notify(landed)
	return changed, nil
}

// ApplyLog applies one burst of a verdict log stream: it writes the
// verdicts and attack reports and moves the stream's cursor to seq, in one
// transaction, so that a burst is applied exactly once across a crash. A
// burst at or below the stored cursor was applied before and changes
// nothing (changed 0, no hooks). changed counts the verdicts that changed
// the store.
func (s *Store) ApplyLog(stream string, seq uint64, items []Item, reports []attacks.Report) (changed int, ar AttackResult, err error) {
	if stream == "" || seq == 0 {
		return 0, AttackResult{}, fmt.Errorf("store: apply log: stream %q sequence %d", stream, seq)
	}
	defer s.lockHooks()()
	var landed []Landed
	var added []attacks.Report
	k := cursorKey(stream)
	err = s.db.Update(func(tx *bolt.Tx) error {
		landed, added = landed[:0], added[:0]
		meta := tx.Bucket(bucketMeta)
		if seq <= getU64(meta, k) {
			return errApplied // roll back: nothing to commit
		}
		var err error
		if changed, err = putTxn(tx, items, s.landedSink(&landed), s.verdicts); err != nil {
			return err
		}
		if ar, err = applyAttacksTxn(tx, reports, s.cfg.AttackEvents, s.addedSink(&added, nil)); err != nil {
			return err
		}
		return putU64(meta, k, seq)
	})
	if errors.Is(err, errApplied) {
		return 0, AttackResult{}, nil
	}
	if err != nil {
		return 0, AttackResult{}, fmt.Errorf("store: apply log %s up to %d: %w", stream, seq, err)
	}
	s.notify(landed)
	s.notifyAttacks(added)
	return changed, ar, nil
}

// Cursor returns the sequence of the last message applied from a verdict
// log stream (0 when none).
func (s *Store) Cursor(stream string) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			seq = getU64(meta, cursorKey(stream))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: read cursor of %s: %w", stream, err)
	}
	return seq, nil
}

// errApplied ends an ApplyLog transaction whose burst was applied before.
var errApplied = errors.New("applied before")

func cursorKey(stream string) []byte { return []byte(keyLogCursor + stream) }

// landedSink returns where putTxn records the verdicts that changed the
// store: nil (record nothing) without Config.OnVerdicts.
func (s *Store) landedSink(dst *[]Landed) *[]Landed {
	if s.cfg.OnVerdicts == nil {
		return nil
	}
	return dst
}

// lockHooks takes hookMu when a hook is set and returns its unlock.
func (s *Store) lockHooks() (unlock func()) {
	if s.cfg.OnVerdicts == nil && s.cfg.OnAttacks == nil {
		return func() {}
	}
	s.hookMu.Lock()
	return s.hookMu.Unlock
}

// addedSink returns applyAttacksTxn's onNew: next (may be nil), and with
// Config.OnAttacks the report appended to dst too.
func (s *Store) addedSink(dst *[]attacks.Report, next func(attacks.Report) error) func(attacks.Report) error {
	if s.cfg.OnAttacks == nil {
		return next
	}
	return func(r attacks.Report) error {
		*dst = append(*dst, r)
		if next != nil {
			return next(r)
		}
		return nil
	}
}

// notifyAttacks passes committed new attack reports to Config.OnAttacks.
func (s *Store) notifyAttacks(added []attacks.Report) {
	if s.cfg.OnAttacks != nil && len(added) > 0 {
		s.cfg.OnAttacks(added)
	}
}

// notify passes committed verdicts to Config.OnVerdicts.
func (s *Store) notify(landed []Landed) {
	if s.cfg.OnVerdicts != nil && len(landed) > 0 {
		s.cfg.OnVerdicts(landed)
	}
}

// putTxn writes items; when landed is not nil, it appends each verdict
// that changed the store to it.
func putTxn(tx *bolt.Tx, items []Item, landed *[]Landed, verdicts *present) (int, error) {
	b := tx.Bucket(bucketVerdicts)
	changed := 0
	for _, it := range items {
		if !it.Addr.IsValid() || it.Verdict == nil {
			return changed, fmt.Errorf("invalid item for %v", it.Addr)
		}
		val, err := encodeVerdict(it.Verdict)
		if err != nil {
			return changed, err
		}
		k := key(Normalize(it.Addr))
		if old := b.Get(k[:]); old != nil && bytes.Compare(val, old) <= 0 {
			continue // the same verdict, or an older one
		}
		if verdicts != nil {
			verdicts.add(k) // before the commit: see present
		}
		if err := b.Put(k[:], val); err != nil {
			return changed, fmt.Errorf("put %s: %w", it.Addr, err)
		}
		changed++
		if landed != nil {
			*landed = append(*landed, Landed{Addr: Normalize(it.Addr), Verdict: columns.VerdictOf(it.Verdict)})
		}
	}
	return changed, nil
}

// ReserveIDs durably reserves n sighting ids and returns the first one. The
// block starts at the later of the stored high-water mark and now in Unix
// nanoseconds, so ids are never reused across restarts (and stay unique
// even if the file were lost, unless the clock went back).
func (s *Store) ReserveIDs(n uint64, now time.Time) (first uint64, err error) {
	if n == 0 {
		return 0, errors.New("store: reserve 0 ids")
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		first = max(getU64(meta, keySightingHWM), uint64(max(now.UnixNano(), 1)))
		return putU64(meta, keySightingHWM, first+n)
	})
	if err != nil {
		return 0, fmt.Errorf("store: reserve %d sighting ids: %w", n, err)
	}
	return first, nil
}

// Len returns the number of stored verdicts.
func (s *Store) Len() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketVerdicts).Stats().KeyN
		return nil
	})
	return n
}

// ScanVerdicts calls fn with the stored verdicts whose inference time
// want accepts, in address order, within one read transaction. want sees
// only the time (kept in clear at the head of each value; the verdict's
// Inferred, zero when unknown), so a caller that needs few verdicts out of
// many decodes only those. fn must not write to the store.
func (s *Store) ScanVerdicts(want func(inferred time.Time) bool, fn func(addr netip.Addr, v verdict.Verdict)) error {
	err := s.eachVerdict(want, func(addr netip.Addr, v verdict.Verdict) error {
		fn(addr, v)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: scan verdicts: %w", err)
	}
	return nil
}

// eachVerdict is ScanVerdicts and ForEachVerdict: it calls fn with the
// stored verdicts whose inference time want accepts (nil: every one), in
// address order, within one read transaction, and stops at fn's first
// error. A file no node has initialised holds none.
func (s *Store) eachVerdict(want func(inferred time.Time) bool, fn func(addr netip.Addr, v verdict.Verdict) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVerdicts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 16 || len(v) < 8 {
				return fmt.Errorf("verdict entry of %d+%d bytes", len(k), len(v))
			}
			if want != nil && !want(verdict.UnixNano(int64(binary.BigEndian.Uint64(v)^(1<<63)))) {
				return nil
			}
			addr := netip.AddrFrom16([16]byte(k)).Unmap()
			d, err := decodeVerdict(v)
			if err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
			return fn(addr, d)
		})
	})
}

// Touch records that addr was queried at t. It never blocks on I/O; when
// the table of unflushed touches is full, the touch is dropped and counted.
func (s *Store) Touch(addr netip.Addr, t time.Time) {
	k := key(Normalize(addr))
	ns := t.UnixNano()
	s.mu.Lock()
	old, ok := s.touches[k]
	switch {
	case ok:
		if ns > old {
			s.touches[k] = ns
		}
	case len(s.touches) < s.cfg.TouchMax:
		s.touches[k] = ns
	default:
		s.dropped.Add(1)
	}
	full := len(s.touches) >= s.cfg.TouchMax
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// TouchesDropped counts touches dropped because the table was full.
func (s *Store) TouchesDropped() uint64 { return s.dropped.Load() }

// flushChunk is how many last-seen times one flush transaction writes.
// The times are sorted, so a chunk is a contiguous range of keys and
// rewrites only the pages of that range; between chunks the flush yields,
// so that the query path never waits behind one long transaction.
const flushChunk = 2048

// Flush writes the held last-seen times, in transactions of flushChunk
// consecutive keys. They replace the stored times without reading them
// (only a clock stepped back makes a held time older than the stored
// one). A failed chunk ends the flush: the times of the chunks not
// written are lost (last-seen times are a hint, not a record).
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	t := s.touches
	if len(t) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.touches = make(map[[16]byte]int64, len(t))
	s.flushing = t
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.flushing = nil
		s.mu.Unlock()
	}()

	type touch struct {
		k  [16]byte
		ns int64
	}
	ts := make([]touch, 0, len(t))
	for k, ns := range t {
		ts = append(ts, touch{k, ns})
	}
	// Sequential keys write faster, and a chunk of them is one range of
	// pages.
	slices.SortFunc(ts, func(a, b touch) int { return bytes.Compare(a.k[:], b.k[:]) })
	// The values share one slab: bbolt copies keys but keeps values until
	// the commit.
	vals := make([]byte, 8*len(ts))
	for lo := 0; lo < len(ts); lo += flushChunk {
		if lo > 0 {
			runtime.Gosched()
		}
		chunk := ts[lo:min(lo+flushChunk, len(ts))]
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketSeen)
			for i, e := range chunk {
				val := vals[8*(lo+i) : 8*(lo+i)+8 : 8*(lo+i)+8]
				binary.BigEndian.PutUint64(val, uint64(e.ns))
				if err := b.Put(e.k[:], val); err != nil {
					return fmt.Errorf("put last seen of %s: %w", netip.AddrFrom16(e.k).Unmap(), err)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: flush %d last-seen times (%d written): %w", len(ts), lo, err)
		}
	}
	return nil
}

// Run flushes last-seen times every FlushInterval (or at once when the
// table is full) and, with a Retention, sweeps (at once, then every
// SweepEvery) until ctx ends. Close flushes the rest.
func (s *Store) Run(ctx context.Context) error {
	var sweeps sync.WaitGroup
	defer sweeps.Wait()
	sweeps.Go(func() { s.runSweeps(ctx) })
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.kick:
		}
		if err := s.Flush(); err != nil {
			s.log.Error().Err(err).Msg("flush last-seen times")
		}
	}
}

// Close flushes the held last-seen times and closes the file. It is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		ferr := s.Flush()
		cerr := s.db.Close()
		if cerr != nil {
			cerr = fmt.Errorf("store: close: %w", cerr)
		}
		s.closeErr = errors.Join(ferr, cerr)
	})
	return s.closeErr
}
