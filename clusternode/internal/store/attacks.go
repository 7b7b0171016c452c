package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/attacks"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var (
	bucketAttacks = []byte("attacks")
	bucketOutbox  = []byte("attack_outbox")

	keyOutboxLen = []byte("attack_outbox_len")
)

// Defaults for the attack history.
const (
	DefaultAttackEvents = 100
	DefaultOutboxMax    = 1_000_000
)

// ErrOutboxFull means the reports waiting to be forwarded to the leader
// already fill the outbox: nothing was stored.
var ErrOutboxFull = errors.New("store: attack report outbox full (the leader has not taken the earlier reports yet)")

// AttackEvent is one attack kept in an address's history.
type AttackEvent struct {
	Time     time.Time
	Kind     attacks.Kind
	Reporter string
}

func (e AttackEvent) compare(o AttackEvent) int {
	if c := e.Time.Compare(o.Time); c != 0 {
		return c
	}
	if e.Kind != o.Kind {
		return int(e.Kind) - int(o.Kind)
	}
	switch {
	case e.Reporter < o.Reporter:
		return -1
	case e.Reporter > o.Reporter:
		return 1
	}
	return 0
}

// AttackHistory is what the store knows about attacks from one address:
// the number of distinct reports per kind, and the newest reports (at most
// Config.AttackEvents), oldest first.
type AttackHistory struct {
	Counts [attacks.NumKinds]uint64
	Events []AttackEvent
}

// Total is the number of distinct reports of every kind.
func (h AttackHistory) Total() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Last is the newest attack's time (zero when none is kept).
func (h AttackHistory) Last() time.Time {
	if len(h.Events) == 0 {
		return time.Time{}
	}
	return h.Events[len(h.Events)-1].Time
}

// AttackResult counts what AddAttacks (or a log burst) did with reports.
type AttackResult struct {
	New        int // counted and kept: they were not known
	Duplicates int // already known (the same address, time, kind and reporter)
	TooOld     int // older than every kept report of a full history: ignored
}

// OutboxEntry is a report waiting to be forwarded to the leader.
type OutboxEntry struct {
	Seq    uint64
	Report *styxv1.AttackReport
}

// encodeHistory: version byte 1; uvarint number of kinds, then a uvarint
// count per kind (index = attacks.Kind); uvarint number of events, then per
// event 8 bytes of big-endian Unix nanoseconds, the kind byte and the
// reporter (uvarint length, bytes).
func encodeHistory(h *AttackHistory) []byte {
	b := make([]byte, 0, 16+len(h.Events)*24)
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(h.Counts)))
	for _, c := range h.Counts {
		b = binary.AppendUvarint(b, c)
	}
	b = binary.AppendUvarint(b, uint64(len(h.Events)))
	for _, e := range h.Events {
		b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
		b = append(b, byte(e.Kind))
		b = binary.AppendUvarint(b, uint64(len(e.Reporter)))
		b = append(b, e.Reporter...)
	}
	return b
}

func decodeHistory(b []byte) (AttackHistory, error) {
	var h AttackHistory
	bad := func(what string) (AttackHistory, error) {
		return AttackHistory{}, fmt.Errorf("stored attack history: bad %s", what)
	}
	if len(b) == 0 || b[0] != 1 {
		return bad("version")
	}
	b = b[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	nk, ok := uv()
	if !ok || nk > 255 {
		return bad("kind count")
	}
	for i := range nk {
		c, ok := uv()
		if !ok {
			return bad("count")
		}
		if i < uint64(len(h.Counts)) {
			h.Counts[i] = c
		}
	}
	ne, ok := uv()
	if !ok || ne > uint64(len(b)) {
		return bad("event count")
	}
	h.Events = make([]AttackEvent, 0, ne)
	for range ne {
		if len(b) < 9 {
			return bad("event")
		}
		e := AttackEvent{Time: time.Unix(0, int64(binary.BigEndian.Uint64(b))), Kind: attacks.Kind(b[8])}
		b = b[9:]
		n, ok := uv()
		if !ok || n > uint64(len(b)) {
			return bad("reporter")
		}
		e.Reporter = string(b[:n])
		b = b[n:]
		h.Events = append(h.Events, e)
	}
	if len(b) != 0 {
		return bad("length")
	}
	return h, nil
}

// applyAttack adds r to its address's history. The rule, the same on every
// node, so that nodes applying the log in its order converge: a report
// already kept is a duplicate; a report older than every kept one of a
// full history is ignored (it could not be recognised if it came again);
// any other is counted and kept, and the oldest kept one goes when the
// history is over its bound.
func applyAttack(b *bolt.Bucket, r attacks.Report, maxEvents int) (attackOutcome, error) {
	k := key(Normalize(r.Addr))
	var h AttackHistory
	if v := b.Get(k[:]); v != nil {
		var err error
		if h, err = decodeHistory(v); err != nil {
			return 0, fmt.Errorf("%s: %w", r.Addr, err)
		}
	}
	e := AttackEvent{Time: r.Time, Kind: r.Kind, Reporter: r.Reporter}
	i, found := slices.BinarySearchFunc(h.Events, e, AttackEvent.compare)
	switch {
	case found:
		return attackDuplicate, nil
	case i == 0 && len(h.Events) >= maxEvents:
		return attackTooOld, nil
	}
	h.Events = slices.Insert(h.Events, i, e)
	if over := len(h.Events) - maxEvents; over > 0 {
		h.Events = h.Events[over:]
	}
	h.Counts[r.Kind]++
	if err := b.Put(k[:], encodeHistory(&h)); err != nil {
		return 0, fmt.Errorf("put attack history of %s: %w", r.Addr, err)
	}
	return attackNew, nil
}

type attackOutcome int

const (
	attackNew attackOutcome = iota + 1
	attackDuplicate
	attackTooOld
)

func (res *AttackResult) count(o attackOutcome) {
	switch o {
	case attackNew:
		res.New++
	case attackDuplicate:
		res.Duplicates++
	case attackTooOld:
		res.TooOld++
	}
}

func applyAttacksTxn(tx *bolt.Tx, rs []attacks.Report, maxEvents int, onNew func(attacks.Report) error) (AttackResult, error) {
	var res AttackResult
	b := tx.Bucket(bucketAttacks)
	for _, r := range rs {
		if !r.Addr.IsValid() || !r.Kind.Valid() {
			return res, fmt.Errorf("invalid attack report for %v", r.Addr)
		}
		o, err := applyAttack(b, r, maxEvents)
		if err != nil {
			return res, err
		}
		res.count(o)
		if o == attackNew && onNew != nil {
			if err := onNew(r); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// AddAttacks applies reports accepted on this node and queues the new
// ones for the leader (the outbox), in one transaction. When the outbox
// cannot take every report, nothing is written and the error is
// ErrOutboxFull.
func (s *Store) AddAttacks(rs []attacks.Report) (AttackResult, error) {
	defer s.lockHooks()()
	var res AttackResult
	var added []attacks.Report
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = added[:0]
		meta, out := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox)
		queued := getU64(meta, keyOutboxLen)
		if queued+uint64(len(rs)) > uint64(s.cfg.OutboxMax) {
			return ErrOutboxFull
		}
		var err error
		res, err = applyAttacksTxn(tx, rs, s.cfg.AttackEvents, s.addedSink(&added, func(r attacks.Report) error {
			seq, err := out.NextSequence()
			if err != nil {
				return err
			}
			val, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Proto())
			if err != nil {
				return fmt.Errorf("encode attack report: %w", err)
			}
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			queued++
			return out.Put(k[:], val)
		}))
		if err != nil {
			return err
		}
		return putU64(meta, keyOutboxLen, queued)
	})
	if errors.Is(err, ErrOutboxFull) {
		return AttackResult{}, err
	}
	if err != nil {
		return AttackResult{}, fmt.Errorf("store: add %d attack reports: %w", len(rs), err)
	}
	s.notifyAttacks(added)
	return res, nil
}

// ScanAttacks calls fn with every stored attack history, in address
// order, within one read transaction. fn must not write to the store.
func (s *Store) ScanAttacks(fn func(addr netip.Addr, h AttackHistory)) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAttacks).ForEach(func(k, v []byte) error {
			if len(k) != 16 {
				return fmt.Errorf("attack history key of %d bytes", len(k))
			}
			addr := netip.AddrFrom16([16]byte(k)).Unmap()
			h, err := decodeHistory(v)
			if err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
			fn(addr, h)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: scan attack histories: %w", err)
	}
	return nil
}

// Attacks returns addr's attack history (empty when none).
func (s *Store) Attacks(addr netip.Addr) (AttackHistory, error) {
	k := key(Normalize(addr))
	var h AttackHistory
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAttacks).Get(k[:])
		if v == nil {
			return nil
		}
		var err error
		h, err = decodeHistory(v)
		return err
	})
	if err != nil {
		return AttackHistory{}, fmt.Errorf("store: attacks of %s: %w", addr, err)
	}
	return h, nil
}

// AttackOutbox returns up to limit reports waiting for the leader, oldest
// first.
func (s *Store) AttackOutbox(limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			var r styxv1.AttackReport
			if err := proto.Unmarshal(v, &r); err != nil || len(k) != 8 {
				return fmt.Errorf("outbox entry %x: %v", k, err)
			}
			out = append(out, OutboxEntry{Seq: binary.BigEndian.Uint64(k), Report: &r})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read attack outbox: %w", err)
	}
	return out, nil
}

// AckAttacks removes forwarded reports from the outbox.
func (s *Store) AckAttacks(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, out := tx.Bucket(bucketMeta), tx.Bucket(bucketOutbox)
		queued := getU64(meta, keyOutboxLen)
		for _, seq := range seqs {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			if out.Get(k[:]) == nil {
				continue
			}
			if err := out.Delete(k[:]); err != nil {
				return err
			}
			queued--
		}
		return putU64(meta, keyOutboxLen, queued)
	})
	if err != nil {
		return fmt.Errorf("store: ack %d attack reports: %w", len(seqs), err)
	}
	return nil
}

// OutboxLen is the number of reports waiting for the leader.
func (s *Store) OutboxLen() int {
	var n uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = getU64(tx.Bucket(bucketMeta), keyOutboxLen)
		return nil
	})
	return int(n)
}
