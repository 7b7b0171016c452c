package store

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/styx-inference/styx/pkg/verdict"
)

// ErrInUse is returned by OpenReadOnly when another process (a running
// node) holds the store file's lock for longer than the open timeout.
var ErrInUse = errors.New("store is in use by a running node; stop it or copy the file")

// DefaultReadOnlyTimeout is how long OpenReadOnly waits for the file lock
// when timeout is 0.
const DefaultReadOnlyTimeout = 500 * time.Millisecond

// OpenReadOnly opens an existing store file read-only, for offline tools:
// it neither creates the file nor its buckets. bbolt shares the file lock
// between readers but a running node holds it exclusively, so when the lock
// is not granted within timeout (0: DefaultReadOnlyTimeout) the error wraps
// ErrInUse. Only the read methods (Lookup, ForEachVerdict, Cursor, Len)
// may be used on the returned Store; Close it as usual.
func OpenReadOnly(path string, timeout time.Duration, log zerolog.Logger) (*Store, error) {
	if path == "" {
		return nil, errors.New("store: empty path")
	}
	if timeout <= 0 {
		timeout = DefaultReadOnlyTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s read-only: %w", path, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVerdicts, bucketSeen, bucketMeta} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("no %s bucket: not a styx-node store", b)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s read-only: %w", path, err)
	}
	cfg := Config{Path: path, TouchMax: DefaultTouchMax, FlushInterval: DefaultFlushInterval,
		AttackEvents: DefaultAttackEvents, OutboxMax: DefaultOutboxMax}
	return &Store{cfg: cfg, db: db, log: log, touches: make(map[[16]byte]int64), kick: make(chan struct{}, 1)}, nil
}

// ForEachVerdict calls fn with every stored verdict, in address order
// (IPv4 addresses are unmapped), within one read transaction: fn sees a
// consistent snapshot and must not write to the store. It stops at the
// first error fn returns and returns it.
func (s *Store) ForEachVerdict(fn func(addr netip.Addr, v verdict.Verdict) error) error {
	if err := s.eachVerdict(nil, fn); err != nil {
		return fmt.Errorf("store: read verdicts: %w", err)
	}
	return nil
}
