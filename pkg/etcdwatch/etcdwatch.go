package etcdwatch

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/retry"
)

// Client is the part of *clientv3.Client a watch uses.
type Client interface {
	clientv3.KV
	clientv3.Watcher
}

// Handler receives what is under the watched key or prefix. Its functions
// are called one at a time, in revision order, from the goroutine that
// called Prefix or Key; a slow handler slows the watch, nothing more.
type Handler struct {
	// Reset receives every key there is (sorted by key) as of revision rev:
	// first, and again whenever the watch had to list again. A key the
	// handler knows that kvs lacks was deleted meanwhile. Required.
	Reset func(kvs []*mvccpb.KeyValue, rev int64)
	// Put receives a key created or changed after the last Reset. Required.
	Put func(kv *mvccpb.KeyValue)
	// Delete receives a key deleted (or expired with its lease) after the
	// last Reset; kv.Key and kv.ModRevision, the revision of the deletion,
	// are set. Nil ignores deletions.
	Delete func(kv *mvccpb.KeyValue)
}

func (h Handler) validate() error {
	switch {
	case h.Reset == nil:
		return errors.New("etcdwatch: nil Reset")
	case h.Put == nil:
		return errors.New("etcdwatch: nil Put")
	}
	return nil
}

// Retry delays after a failed list or a broken watch.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// errClosed is why a watch channel closed without an error of its own.
var errClosed = errors.New("watch channel closed")

// Prefix follows every key under prefix until ctx ends, then returns nil.
// It returns an error at once only for a bad argument.
func Prefix(ctx context.Context, cli Client, prefix string, h Handler, log zerolog.Logger) error {
	if prefix == "" {
		return errors.New("etcdwatch: empty prefix")
	}
	return follow(ctx, cli, prefix, []clientv3.OpOption{clientv3.WithPrefix()}, h, log.With().Str("prefix", prefix).Logger())
}

// Key follows one key until ctx ends, then returns nil: Reset receives a
// listing of one key-value, or none while the key does not exist. It
// returns an error at once only for a bad argument.
func Key(ctx context.Context, cli Client, key string, h Handler, log zerolog.Logger) error {
	if key == "" {
		return errors.New("etcdwatch: empty key")
	}
	return follow(ctx, cli, key, nil, h, log.With().Str("key", key).Logger())
}

func follow(ctx context.Context, cli Client, key string, opts []clientv3.OpOption, h Handler, log zerolog.Logger) error {
	if cli == nil {
		return errors.New("etcdwatch: nil client")
	}
	if err := h.validate(); err != nil {
		return err
	}
	w := &watch{cli: cli, key: key, opts: opts, h: h}
	bo := retry.NewBackoff(minRetry, maxRetry)
	var rev int64 // the revision the handler is at; 0 lists again
	for ctx.Err() == nil {
		if rev == 0 {
			resp, err := cli.Get(ctx, key, opts...)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				d := bo.NextBackOff()
				log.Warn().Err(err).Dur("retry_in", d).Msg("list failed")
				retry.Sleep(ctx, d)
				continue
			}
			bo.Reset()
			rev = resp.Header.Revision
			h.Reset(resp.Kvs, rev)
		}
		var err error
		rev, err = w.run(ctx, rev, bo.Reset)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, rpctypes.ErrCompacted):
			// Not a failure: the changes since rev are gone, list again now.
			log.Info().Int64("revision", rev).Msg("watch compacted; listing again")
			rev = 0
		default:
			d := bo.NextBackOff()
			log.Warn().Err(err).Int64("revision", rev).Dur("retry_in", d).Msg("watch broke; resuming")
			retry.Sleep(ctx, d)
		}
	}
	return nil
}

type watch struct {
	cli  Client
	key  string
	opts []clientv3.OpOption
	h    Handler
}

// run watches from rev+1 and hands every change to the handler until the
// watch ends; it returns the last revision seen and why it ended. It calls
// progressed for every response that is not an error.
func (w *watch) run(ctx context.Context, rev int64, progressed func()) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := append(w.opts[:len(w.opts):len(w.opts)], clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for wr := range w.cli.Watch(wctx, w.key, opts...) {
		if err := wr.Err(); err != nil {
			return rev, err
		}
		progressed()
		if wr.IsProgressNotify() {
			// Every change up to the header's revision was sent: resuming
			// from there is safe and less likely to meet a compaction.
			rev = max(rev, wr.Header.Revision)
			continue
		}
		for _, ev := range wr.Events {
			switch ev.Type {
			case mvccpb.DELETE:
				if w.h.Delete != nil {
					w.h.Delete(ev.Kv)
				}
			default:
				w.h.Put(ev.Kv)
			}
			rev = ev.Kv.ModRevision
		}
	}
	return rev, errClosed
}
