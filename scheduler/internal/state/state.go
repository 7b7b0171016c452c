package state

import (
	"errors"
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/styx-inference/styx/scheduler/internal/pool"
)

// Worker states.
const (
	WorkerConnecting = "connecting" // registered in etcd, no stream yet
	WorkerReady      = "ready"      // stream open, credits granted
	WorkerDraining   = "draining"   // finishing its batches, takes no more
	WorkerDown       = "down"       // stream broken; reconnecting
)

// Batch states.
const (
	BatchQueued   = "queued"   // waiting for a worker (requeued or split)
	BatchAssigned = "assigned" // outstanding on a worker
)

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("not found")

// Worker is a row of the workers table.
type Worker struct {
	ID           string
	Addr         string
	Host         string
	NUMANode     int
	CPUs         string
	Capacity     int
	ModelVersion string
	State        string
	Session      uint64 // current stream session; 0 when none
	Credits      int    // batches it may still receive
	InFlight     int    // batches outstanding
	BatchesDone  uint64
	AddrsDone    uint64
	Failures     uint64
	Since        time.Time
	LastResult   time.Time
	// DrainRequested is set once an operator asked the worker to drain
	// (AdminService.Drain); the row stays draining until the worker leaves.
	DrainRequested bool
}

// Batch is a row of the batches table.
type Batch struct {
	ID         uint64
	State      string
	WorkerID   string // "" when queued
	Session    uint64
	Attempt    uint32 // attempts started so far
	Failures   uint32 // attempts that failed (worker lost)
	Size       int
	Created    time.Time
	AssignedAt time.Time
	// Entries are the batch's addresses: the pool's entries, which the
	// pool owns and changes (a row's slice itself is never changed).
	Entries []*pool.Entry
}

// Submitter is a row of the submitters table.
type Submitter struct {
	NodeID    string
	Session   uint64
	Connected bool
	Since     time.Time
	Received  uint64
	Outcomes  uint64
	// Log is the node's last report of its verdict log position.
	Log NodeLog
}

// NodeLog is how far behind the verdict log a node said it is.
type NodeLog struct {
	At         time.Time // when the leader received the report (zero: none yet)
	Lag        uint64    // messages
	LagSeconds float64
	Connected  bool
	Stalled    bool
}

// Store is the scheduler's live state.
type Store struct {
	db *memdb.MemDB
}

// New returns an empty store.
func New() (*Store, error) {
	db, err := memdb.NewMemDB(Schema())
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &Store{db: db}, nil
}

// Snapshot returns a read-only view that later writes do not change.
func (s *Store) Snapshot() *Snapshot { return &Snapshot{txn: s.db.Txn(false)} }

// Update runs fn in one write transaction; it commits when fn returns nil.
func (s *Store) Update(fn func(*Txn) error) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	if err := fn(&Txn{txn: txn}); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Txn is a write transaction.
type Txn struct{ txn *memdb.Txn }

// Snapshot is a read transaction.
type Snapshot struct{ txn *memdb.Txn }

// UpsertWorker inserts or replaces a worker.
func (s *Store) UpsertWorker(w *Worker) error {
	return s.Update(func(t *Txn) error { return t.UpsertWorkerTxn(w) })
}

// UpsertWorkerTxn inserts or replaces a worker inside t.
func (t *Txn) UpsertWorkerTxn(w *Worker) error {
	if w.ID == "" {
		return errors.New("upsert worker: empty id")
	}
	if err := t.txn.Insert(TableWorkers, w); err != nil {
		return fmt.Errorf("upsert worker %s: %w", w.ID, err)
	}
	return nil
}

// DeleteWorkerTxn removes a worker.
func (t *Txn) DeleteWorkerTxn(id string) error {
	if _, err := t.txn.DeleteAll(TableWorkers, IndexID, id); err != nil {
		return fmt.Errorf("delete worker %s: %w", id, err)
	}
	return nil
}

// Worker returns a worker by id.
func (t *Txn) Worker(id string) (*Worker, error) { return worker(t.txn, id) }

// Worker returns a worker by id.
func (s *Snapshot) Worker(id string) (*Worker, error) { return worker(s.txn, id) }

func worker(txn *memdb.Txn, id string) (*Worker, error) {
	raw, err := txn.First(TableWorkers, IndexID, id)
	if err != nil {
		return nil, fmt.Errorf("get worker %s: %w", id, err)
	}
	if raw == nil {
		return nil, ErrNotFound
	}
	return raw.(*Worker), nil
}

// Workers lists all workers ordered by id.
func (t *Txn) Workers() ([]*Worker, error) { return workers(t.txn, nil) }

// Workers lists all workers ordered by id; ws (if not nil) is added the
// table's watch channel.
func (s *Snapshot) Workers(ws memdb.WatchSet) ([]*Worker, error) { return workers(s.txn, ws) }

// WorkersOnHost lists the workers registered with host, in index order.
func (t *Txn) WorkersOnHost(host string) ([]*Worker, error) {
	it, err := t.txn.Get(TableWorkers, IndexHost, host)
	if err != nil {
		return nil, fmt.Errorf("list workers on host %s: %w", host, err)
	}
	var out []*Worker
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Worker))
	}
	return out, nil
}

func workers(txn *memdb.Txn, ws memdb.WatchSet) ([]*Worker, error) {
	it, err := txn.Get(TableWorkers, IndexID)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*Worker
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Worker))
	}
	return out, nil
}

// UpsertBatchTxn inserts or replaces a batch.
func (t *Txn) UpsertBatchTxn(b *Batch) error {
	if err := t.txn.Insert(TableBatches, b); err != nil {
		return fmt.Errorf("upsert batch %d: %w", b.ID, err)
	}
	return nil
}

// DeleteBatchTxn removes a batch.
func (t *Txn) DeleteBatchTxn(id uint64) error {
	if _, err := t.txn.DeleteAll(TableBatches, IndexID, id); err != nil {
		return fmt.Errorf("delete batch %d: %w", id, err)
	}
	return nil
}

// Batch returns a batch by id.
func (t *Txn) Batch(id uint64) (*Batch, error) {
	raw, err := t.txn.First(TableBatches, IndexID, id)
	if err != nil {
		return nil, fmt.Errorf("get batch %d: %w", id, err)
	}
	if raw == nil {
		return nil, ErrNotFound
	}
	return raw.(*Batch), nil
}

// BatchesOfWorker lists the batches assigned to a worker.
func (t *Txn) BatchesOfWorker(workerID string) ([]*Batch, error) {
	return batchesBy(t.txn, IndexWorker, workerID)
}

// QueuedBatches lists queued batches ordered by id (oldest first).
func (t *Txn) QueuedBatches() ([]*Batch, error) {
	bs, err := batchesBy(t.txn, IndexState, BatchQueued)
	if err != nil {
		return nil, err
	}
	sortBatches(bs)
	return bs, nil
}

// FirstQueuedBatch returns the oldest queued batch or nil.
func (t *Txn) FirstQueuedBatch() (*Batch, error) {
	bs, err := t.QueuedBatches()
	if err != nil || len(bs) == 0 {
		return nil, err
	}
	return bs[0], nil
}

// CountBatches returns the number of batches in a state.
func (s *Snapshot) CountBatches(state string) (int, error) {
	bs, err := batchesBy(s.txn, IndexState, state)
	return len(bs), err
}

func batchesBy(txn *memdb.Txn, index, v string) ([]*Batch, error) {
	it, err := txn.Get(TableBatches, index, v)
	if err != nil {
		return nil, fmt.Errorf("list batches by %s: %w", index, err)
	}
	var out []*Batch
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Batch))
	}
	return out, nil
}

func sortBatches(bs []*Batch) {
	for i := 1; i < len(bs); i++ {
		for j := i; j > 0 && bs[j].ID < bs[j-1].ID; j-- {
			bs[j], bs[j-1] = bs[j-1], bs[j]
		}
	}
}

// UpsertSubmitterTxn inserts or replaces a submitter.
func (t *Txn) UpsertSubmitterTxn(s *Submitter) error {
	if err := t.txn.Insert(TableSubmitters, s); err != nil {
		return fmt.Errorf("upsert submitter %s: %w", s.NodeID, err)
	}
	return nil
}

// Submitter returns a submitter by node id.
func (t *Txn) Submitter(nodeID string) (*Submitter, error) {
	raw, err := t.txn.First(TableSubmitters, IndexID, nodeID)
	if err != nil {
		return nil, fmt.Errorf("get submitter %s: %w", nodeID, err)
	}
	if raw == nil {
		return nil, ErrNotFound
	}
	return raw.(*Submitter), nil
}

// Submitters lists the submitters ordered by node id.
func (s *Snapshot) Submitters(ws memdb.WatchSet) ([]*Submitter, error) {
	it, err := s.txn.Get(TableSubmitters, IndexID)
	if err != nil {
		return nil, fmt.Errorf("list submitters: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*Submitter
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Submitter))
	}
	return out, nil
}
