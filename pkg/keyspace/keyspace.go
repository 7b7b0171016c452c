// Package keyspace owns every etcd key STYX reads or writes, and the JSON
// values stored under them. No other package spells a key.
//
//	/styx/workers/<worker-id>   WorkerRegistration, attached to the worker's lease
//	/styx/nodes/<node-id>       NodeRegistration, attached to the node's lease
//	/styx/leader/               election prefix (concurrency.Election), value LeaderInfo
//	/styx/models/current        ModelPointer (the active model, the canary, the previous one)
//	/styx/models/blobs/<ver>/<n> model artifact chunks, when the artifact lives in etcd
//	/styx/models/canary/<worker-id> CanaryReport, attached to the worker's lease
//	/styx/config/shedding       ShedPolicy, changed live by operators
package keyspace

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Key prefixes and fixed keys.
const (
	Root          = "/styx/"
	WorkersPrefix = "/styx/workers/"
	NodesPrefix   = "/styx/nodes/"
	LeaderPrefix  = "/styx/leader/"
	ModelCurrent  = "/styx/models/current"
	ModelBlobs    = "/styx/models/blobs/"
	CanaryPrefix  = "/styx/models/canary/"
	ConfigPrefix  = "/styx/config/"
	ShedPolicyKey = "/styx/config/shedding"
)

// WorkerKey is the registration key of a worker.
func WorkerKey(id string) string { return WorkersPrefix + id }

// NodeKey is the registration key of a cluster node.
func NodeKey(id string) string { return NodesPrefix + id }

// IDFromKey returns the last path element of key under prefix.
func IDFromKey(prefix, key string) (string, bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	id := key[len(prefix):]
	if id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// ValidID reports whether id can be used as a key element.
func ValidID(id string) error {
	if id == "" {
		return fmt.Errorf("empty id")
	}
	if len(id) > 128 {
		return fmt.Errorf("id %q longer than 128 bytes", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':') {
			return fmt.Errorf("id %q: character %q not allowed (use letters, digits, - _ . :)", id, r)
		}
	}
	return nil
}

// WorkerRegistration is the value under WorkerKey.
type WorkerRegistration struct {
	ID           string `json:"id"`
	Addr         string `json:"addr"` // gRPC address the scheduler dials
	Host         string `json:"host"`
	NUMANode     int    `json:"numa_node"` // -1 when not pinned
	CPUs         string `json:"cpus"`      // cpulist, e.g. "0-3,8-11"
	Capacity     int    `json:"capacity"`  // credits it grants (batches at once)
	ModelVersion string `json:"model_version"`
	Build        string `json:"build"`
	Draining     bool   `json:"draining,omitempty"`
}

// NodeRegistration is the value under NodeKey.
type NodeRegistration struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	Host     string `json:"host"`
	Build    string `json:"build"`
}

// LeaderInfo is the value a scheduler campaigns with.
type LeaderInfo struct {
	ID       string `json:"id"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
}

// ModelRef names one model artifact and where to fetch it.
type ModelRef struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"` // hex of the artifact's bytes
	Size    int64  `json:"size"`
	// URL is etcd:///styx/models/blobs/<version> (chunks in etcd) or
	// file:///path (a file every server can read, e.g. a shared mount).
	URL string `json:"url"`
}

// ModelPointer is the value under ModelCurrent: the active model, an
// optional canary that examines a share of the addresses, and the model
// that was active before (what a rollback restores).
type ModelPointer struct {
	ModelRef
	Canary      *ModelRef `json:"canary,omitempty"`
	CanaryShare float64   `json:"canary_share,omitempty"` // 0..1
	Previous    *ModelRef `json:"previous,omitempty"`
}

// ModelBlobKey is the key of chunk n of a model artifact stored in etcd.
func ModelBlobKey(version string, n int) string {
	return fmt.Sprintf("%s%s/%06d", ModelBlobs, version, n)
}

// CanaryKey is where a worker reports how the canary's verdicts differ.
func CanaryKey(workerID string) string { return CanaryPrefix + workerID }

// CanaryReport is a worker's running comparison of the canary model with
// the current one, on the addresses the canary examined.
type CanaryReport struct {
	WorkerID string `json:"worker_id"`
	Current  string `json:"current"`
	Canary   string `json:"canary"`
	Examined uint64 `json:"examined"` // addresses both models examined
	Differed uint64 `json:"differed"` // of those, with a different type or proxy answer
	// ByType counts differing answers as "<current type>-><canary type>"
	// ("" is not a proxy).
	ByType map[string]uint64 `json:"by_type"`
	// ByASN counts differing answers per AS number (the largest few).
	ByASN map[string]uint64 `json:"by_asn"`
}

// ShedPolicy is the value under ShedPolicyKey. See the scheduler's pool
// package for the meaning of each mode.
type ShedPolicy struct {
	// Mode is "sample" (keep 1 in SampleN new addresses while overloaded),
	// "newest" (refuse new addresses while full) or "oldest" (shed the
	// oldest pending address to make room).
	Mode    string `json:"mode"`
	SampleN int    `json:"sample_n,omitempty"`
}

// Encode marshals v as JSON.
func Encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(b), nil
}

// Decode unmarshals a JSON value read from etcd.
func Decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
