package state

import (
	memdb "github.com/hashicorp/go-memdb"
)

// Table and index names.
const (
	TableWorkers    = "workers"
	TableBatches    = "batches"
	TableSubmitters = "submitters"

	IndexID     = "id"
	IndexState  = "state"
	IndexWorker = "worker"
	IndexHost   = "host"
)

// Schema returns the memdb schema of the scheduler's live state.
func Schema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			TableWorkers:    workersTable(),
			TableBatches:    batchesTable(),
			TableSubmitters: submittersTable(),
		},
	}
}

func workersTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableWorkers,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID:    {Name: IndexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			IndexState: {Name: IndexState, Indexer: &memdb.StringFieldIndex{Field: "State"}},
			IndexHost:  {Name: IndexHost, AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Host"}}, // a registration may name no host
		},
	}
}

func batchesTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableBatches,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID:     {Name: IndexID, Unique: true, Indexer: &memdb.UintFieldIndex{Field: "ID"}},
			IndexState:  {Name: IndexState, Indexer: &memdb.StringFieldIndex{Field: "State"}},
			IndexWorker: {Name: IndexWorker, AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "WorkerID"}},
		},
	}
}

func submittersTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableSubmitters,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {Name: IndexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "NodeID"}},
		},
	}
}
