// Package modelstore publishes model artifacts where every server can fetch
// them and keeps the pointer /styx/models/current: the active model, an
// optional canary, and the previous model (what a rollback restores).
//
// Artifacts live in etcd, split into chunks under /styx/models/blobs/
// (etcd limits one request to 1.5 MiB by default), or in a file every
// server can read (file:// URLs). Fetch verifies the size and the sha256 the
// pointer names before anything loads the bytes. Pointer changes are
// compare-and-swap on the pointer's revision, so two operators cannot
// overwrite each other's change unnoticed.
package modelstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/etcdwatch"
	"github.com/styx-inference/styx/pkg/keyspace"
)

// ChunkSize is the size of one artifact chunk stored in etcd.
const ChunkSize = 512 << 10

// MaxEtcdArtifact is the largest artifact Publish stores in etcd; larger
// ones must be published as files.
const MaxEtcdArtifact = 64 << 20

// ErrNoModel means /styx/models/current does not exist yet.
var ErrNoModel = errors.New("no model published")

// ErrConflict means the pointer changed between reading and writing it.
var ErrConflict = errors.New("model pointer changed concurrently; read it again")

// Ref describes artifact bytes published under version at url.
func Ref(version string, artifact []byte, url string) keyspace.ModelRef {
	sum := sha256.Sum256(artifact)
	return keyspace.ModelRef{Version: version, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(artifact)), URL: url}
}

// EtcdURL is the URL of an artifact stored in etcd.
func EtcdURL(version string) string { return "etcd://" + keyspace.ModelBlobs + version }

// Store stores artifact bytes in etcd under version and returns their
// reference. It does not change the pointer. Storing the same version
// twice with different bytes is refused.
func Store(ctx context.Context, cli *clientv3.Client, version string, artifact []byte) (keyspace.ModelRef, error) {
	if err := keyspace.ValidID(version); err != nil {
		return keyspace.ModelRef{}, fmt.Errorf("model version: %w", err)
	}
	if len(artifact) == 0 {
		return keyspace.ModelRef{}, errors.New("empty artifact")
	}
	if len(artifact) > MaxEtcdArtifact {
		return keyspace.ModelRef{}, fmt.Errorf("artifact of %d bytes is above the %d bytes etcd holds; publish it as a file", len(artifact), MaxEtcdArtifact)
	}
	ref := Ref(version, artifact, EtcdURL(version))
	if old, err := fetchEtcd(ctx, cli, version); err == nil && len(old) > 0 {
		if !bytes.Equal(old, artifact) {
			return keyspace.ModelRef{}, fmt.Errorf("version %s already exists with other content; pick a new version", version)
		}
		return ref, nil
	}
	for n := 0; n*ChunkSize < len(artifact); n++ {
		end := min((n+1)*ChunkSize, len(artifact))
		if _, err := cli.Put(ctx, keyspace.ModelBlobKey(version, n), string(artifact[n*ChunkSize:end])); err != nil {
			return keyspace.ModelRef{}, fmt.Errorf("store chunk %d: %w", n, err)
		}
	}
	return ref, nil
}

// Current reads the pointer and its modification revision.
func Current(ctx context.Context, cli *clientv3.Client) (keyspace.ModelPointer, int64, error) {
	resp, err := cli.Get(ctx, keyspace.ModelCurrent)
	if err != nil {
		return keyspace.ModelPointer{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return keyspace.ModelPointer{}, 0, ErrNoModel
	}
	var p keyspace.ModelPointer
	if err := keyspace.Decode(resp.Kvs[0].Value, &p); err != nil {
		return p, 0, fmt.Errorf("%s: %w", keyspace.ModelCurrent, err)
	}
	return p, resp.Kvs[0].ModRevision, nil
}

// Update reads the pointer, applies change and writes the result if the
// pointer did not change meanwhile. change sees the zero pointer (and
// exists=false) when none exists yet.
func Update(ctx context.Context, cli *clientv3.Client, change func(p *keyspace.ModelPointer, exists bool) error) (keyspace.ModelPointer, error) {
	p, rev, err := Current(ctx, cli)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNoModel) {
		return p, err
	}
	if err := change(&p, exists); err != nil {
		return p, err
	}
	if err := validPointer(p); err != nil {
		return p, err
	}
	v, err := keyspace.Encode(p)
	if err != nil {
		return p, err
	}
	cmp := clientv3.Compare(clientv3.ModRevision(keyspace.ModelCurrent), "=", rev)
	if !exists {
		cmp = clientv3.Compare(clientv3.CreateRevision(keyspace.ModelCurrent), "=", 0)
	}
	resp, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(keyspace.ModelCurrent, v)).Commit()
	if err != nil {
		return p, err
	}
	if !resp.Succeeded {
		return p, ErrConflict
	}
	return p, nil
}

func validPointer(p keyspace.ModelPointer) error {
	if err := validRef(p.ModelRef); err != nil {
		return fmt.Errorf("current model: %w", err)
	}
	if p.Canary != nil {
		if err := validRef(*p.Canary); err != nil {
			return fmt.Errorf("canary: %w", err)
		}
		if p.CanaryShare <= 0 || p.CanaryShare > 1 {
			return fmt.Errorf("canary share %g outside (0, 1]", p.CanaryShare)
		}
	}
	return nil
}

func validRef(r keyspace.ModelRef) error {
	switch {
	case keyspace.ValidID(r.Version) != nil:
		return fmt.Errorf("bad version %q", r.Version)
	case len(r.SHA256) != 64:
		return fmt.Errorf("version %s: bad sha256 %q", r.Version, r.SHA256)
	case r.Size <= 0:
		return fmt.Errorf("version %s: size %d", r.Version, r.Size)
	case !strings.HasPrefix(r.URL, "etcd://") && !strings.HasPrefix(r.URL, "file://"):
		return fmt.Errorf("version %s: url %q is neither etcd:// nor file://", r.Version, r.URL)
	}
	return nil
}

// Activate makes ref the current model; the old current becomes previous
// and any canary is dropped.
func Activate(ctx context.Context, cli *clientv3.Client, ref keyspace.ModelRef) (keyspace.ModelPointer, error) {
	return Update(ctx, cli, func(p *keyspace.ModelPointer, exists bool) error {
		if exists && p.ModelRef == ref {
			return fmt.Errorf("%s is already the current model", ref.Version)
		}
		if exists {
			old := p.ModelRef
			p.Previous = &old
		}
		p.ModelRef, p.Canary, p.CanaryShare = ref, nil, 0
		return nil
	})
}

// StartCanary makes ref examine share (0..1] of the addresses beside the
// current model.
func StartCanary(ctx context.Context, cli *clientv3.Client, ref keyspace.ModelRef, share float64) (keyspace.ModelPointer, error) {
	return Update(ctx, cli, func(p *keyspace.ModelPointer, exists bool) error {
		if !exists {
			return errors.New("no current model to compare a canary with: publish one first")
		}
		if p.ModelRef.Version == ref.Version {
			return fmt.Errorf("%s is already the current model", ref.Version)
		}
		c := ref
		p.Canary, p.CanaryShare = &c, share
		return nil
	})
}

// Promote makes the canary the current model.
func Promote(ctx context.Context, cli *clientv3.Client) (keyspace.ModelPointer, error) {
	return Update(ctx, cli, func(p *keyspace.ModelPointer, exists bool) error {
		if !exists || p.Canary == nil {
			return errors.New("no canary to promote")
		}
		old := p.ModelRef
		p.ModelRef, p.Previous, p.Canary, p.CanaryShare = *p.Canary, &old, nil, 0
		return nil
	})
}

// Rollback restores the previous model (or, with a canary running, just
// stops the canary).
func Rollback(ctx context.Context, cli *clientv3.Client) (keyspace.ModelPointer, error) {
	return Update(ctx, cli, func(p *keyspace.ModelPointer, exists bool) error {
		switch {
		case !exists:
			return ErrNoModel
		case p.Canary != nil:
			p.Canary, p.CanaryShare = nil, 0
		case p.Previous == nil:
			return errors.New("no previous model to roll back to")
		default:
			cur := p.ModelRef
			p.ModelRef, p.Previous = *p.Previous, &cur
		}
		return nil
	})
}

// Fetch returns the artifact ref names, verified against its size and
// sha256.
func Fetch(ctx context.Context, cli *clientv3.Client, ref keyspace.ModelRef) ([]byte, error) {
	if err := validRef(ref); err != nil {
		return nil, err
	}
	u, err := url.Parse(ref.URL)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", ref.Version, err)
	}
	var b []byte
	switch u.Scheme {
	case "etcd":
		ver, ok := strings.CutPrefix(u.Path, keyspace.ModelBlobs)
		if !ok || ver == "" {
			return nil, fmt.Errorf("model %s: url %q is not under %s", ref.Version, ref.URL, keyspace.ModelBlobs)
		}
		b, err = fetchEtcd(ctx, cli, ver)
	case "file":
		if ref.Size > MaxFileArtifact {
			return nil, fmt.Errorf("model %s: size %d above %d", ref.Version, ref.Size, int64(MaxFileArtifact))
		}
		b, err = os.ReadFile(u.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch model %s: %w", ref.Version, err)
	}
	if int64(len(b)) != ref.Size {
		return nil, fmt.Errorf("model %s: fetched %d bytes, pointer says %d", ref.Version, len(b), ref.Size)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != ref.SHA256 {
		return nil, fmt.Errorf("model %s: sha256 %s, pointer says %s", ref.Version, got, ref.SHA256)
	}
	return b, nil
}

// MaxFileArtifact bounds what Fetch reads from a file.
const MaxFileArtifact = 1 << 30

func fetchEtcd(ctx context.Context, cli *clientv3.Client, version string) ([]byte, error) {
	resp, err := cli.Get(ctx, keyspace.ModelBlobs+version+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("no artifact stored for version %s", version)
	}
	var buf bytes.Buffer
	for _, kv := range resp.Kvs {
		buf.Write(kv.Value)
	}
	return buf.Bytes(), nil
}

// Prune deletes stored artifacts that the pointer no longer names.
func Prune(ctx context.Context, cli *clientv3.Client) (int, error) {
	p, _, err := Current(ctx, cli)
	if err != nil {
		return 0, err
	}
	keep := map[string]bool{p.Version: true}
	if p.Canary != nil {
		keep[p.Canary.Version] = true
	}
	if p.Previous != nil {
		keep[p.Previous.Version] = true
	}
	resp, err := cli.Get(ctx, keyspace.ModelBlobs, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	gone := map[string]bool{}
	for _, kv := range resp.Kvs {
		ver, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), keyspace.ModelBlobs), "/")
		if !keep[ver] && !gone[ver] {
			gone[ver] = true
			if _, err := cli.Delete(ctx, keyspace.ModelBlobs+ver+"/", clientv3.WithPrefix()); err != nil {
				return len(gone) - 1, err
			}
		}
	}
	return len(gone), nil
}

// Watch calls fn with the pointer now (if one exists) and after every
// change, until ctx ends. It survives etcd restarts and compactions
// (etcdwatch lists again). A pointer that does not decode or validate is
// ignored: the servers keep what they run. fn runs on Watch's goroutine.
func Watch(ctx context.Context, cli *clientv3.Client, fn func(keyspace.ModelPointer)) {
	var last string
	deliver := func(v []byte) {
		if string(v) == last {
			return
		}
		var p keyspace.ModelPointer
		if err := keyspace.Decode(v, &p); err != nil || validPointer(p) != nil {
			return
		}
		last = string(v)
		fn(p)
	}
	_ = etcdwatch.Key(ctx, cli, keyspace.ModelCurrent, etcdwatch.Handler{
		Reset: func(kvs []*mvccpb.KeyValue, _ int64) {
			if len(kvs) > 0 {
				deliver(kvs[0].Value)
			}
		},
		Put: func(kv *mvccpb.KeyValue) { deliver(kv.Value) },
		// A deleted pointer leaves the servers with what they run.
	}, zerolog.Nop())
}
