package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// DefaultSweepEvery is how often Run sweeps by default (see
// Config.SweepEvery).
const DefaultSweepEvery = time.Minute

// Retention is how long the store keeps what it learnt; the same policy
// as the verdict log's streams (see pkg/verdictlog), so that what a node
// holds is what a node that replays the log would hold. The zero
// Retention keeps everything.
type Retention struct {
	// Clean is how long a verdict that found no proxy is kept, counted
	// from its inference time. The last-seen time of an address without
	// a verdict is kept as long.
	Clean time.Duration
	// Proxy is how long a proxy verdict is kept (from its inference
	// time), and an attack history (from its newest report).
	Proxy time.Duration
}

// Validate reports a policy error: both zero, or 0 < Clean <= Proxy.
func (r Retention) Validate() error {
	switch {
	case r == Retention{}:
		return nil
	case r.Clean <= 0:
		return fmt.Errorf("store: clean retention %s not positive", r.Clean)
	case r.Proxy < r.Clean:
		return fmt.Errorf("store: proxy retention %s shorter than clean retention %s", r.Proxy, r.Clean)
	}
	return nil
}

// Expired counts what sweeps deleted, by kind.
type Expired struct {
	Clean   uint64 // verdicts that found no proxy
	Proxy   uint64 // proxy verdicts
	Attacks uint64 // attack histories
	// Seen counts last-seen times deleted: with their address's verdict,
	// or older than Retention.Clean for an address without one.
	Seen uint64
}

func (e *Expired) add(o Expired) {
	e.Clean += o.Clean
	e.Proxy += o.Proxy
	e.Attacks += o.Attacks
	e.Seen += o.Seen
}

// expiredCounts is Expired as counters that metrics read while sweeps
// run.
type expiredCounts struct {
	clean, proxy, attacks, seen atomic.Uint64
}

func (c *expiredCounts) add(e Expired) {
	c.clean.Add(e.Clean)
	c.proxy.Add(e.Proxy)
	c.attacks.Add(e.Attacks)
	c.seen.Add(e.Seen)
}

func (c *expiredCounts) load() Expired {
	return Expired{Clean: c.clean.Load(), Proxy: c.proxy.Load(), Attacks: c.attacks.Load(), Seen: c.seen.Load()}
}

// ExpiredTotal returns what every sweep since Open deleted.
func (s *Store) ExpiredTotal() Expired { return s.expired.load() }

// Sweep sizes. A sweep reads sweepScan keys per read transaction and
// deletes at most sweepChunk entries per write transaction, yielding
// between transactions, as Flush does, so that the query path never
// waits behind one long write. A read transaction does not block writers;
// a write transaction that finds nothing to delete is never opened (an
// empty commit still syncs the file).
const (
	sweepScan  = 16_384
	sweepChunk = 2_048
)

// Sweep deletes what Config.Retention no longer keeps, as of now:
//   - verdicts that found no proxy inferred before now-Clean, proxy
//     verdicts inferred before now-Proxy (a verdict without an inference
//     time counts as inferred at the epoch, and goes);
//   - attack histories whose newest report is older than now-Proxy;
//   - the last-seen time of every address whose verdict goes, and of
//     every address without a verdict last seen before now-Clean.
//
// The time at the head of each stored verdict decides for most of them
// without decoding: one inferred after now-Clean stays, one before
// now-Proxy goes; between the two, the proxy flag is read from the
// encoding (never the whole verdict). Each deletion checks the entry
// again in its write transaction, so that a verdict or last-seen time
// written since the scan read it is kept.
//
// The filter of stored verdicts (see present) keeps the bits of deleted
// addresses: a lookup of one costs a read transaction that finds nothing,
// as a false positive does, until the node restarts and rebuilds the
// filter from the keys.
//
// Deleted entries free their pages, which later writes reuse: the file
// stops growing once the retention windows are full (bbolt never shrinks
// it). The hooks (Config.OnVerdicts) are not told: the threats window and
// the history table are bounded on their own, and filled from the store
// at the next start.
//
// A sweep reads every verdict, attack history and last-seen time:
// BenchmarkSweep takes 70 ms for 200,000 verdicts and last-seen times
// with nothing to delete, 0.5 s when it deletes a tenth of them, on 2
// cores. Sweep returns what it deleted, also when it stops at an error.
func (s *Store) Sweep(now time.Time) (Expired, error) {
	r := s.cfg.Retention
	if r == (Retention{}) {
		return Expired{}, nil
	}
	cleanBefore := now.Add(-r.Clean).UnixNano()
	proxyBefore := now.Add(-r.Proxy).UnixNano()
	var total Expired

	// Verdicts, with their last-seen times.
	n, err := s.sweepBucket(bucketVerdicts, func(_ *bolt.Tx, _, v []byte) (Expired, error) {
		return verdictExpired(v, cleanBefore, proxyBefore)
	}, func(tx *bolt.Tx, k []byte) (Expired, error) {
		seen := tx.Bucket(bucketSeen)
		if seen.Get(k) == nil {
			return Expired{}, nil
		}
		return Expired{Seen: 1}, seen.Delete(k)
	})
	total.add(n)
	if err != nil {
		return total, fmt.Errorf("store: sweep verdicts: %w", err)
	}

	// Attack histories.
	n, err = s.sweepBucket(bucketAttacks, func(_ *bolt.Tx, k, v []byte) (Expired, error) {
		h, err := decodeHistory(v)
		if err != nil {
			return Expired{}, fmt.Errorf("%x: %w", k, err)
		}
		if len(h.Events) > 0 && h.Events[len(h.Events)-1].Time.UnixNano() >= proxyBefore {
			return Expired{}, nil
		}
		return Expired{Attacks: 1}, nil
	}, nil)
	total.add(n)
	if err != nil {
		return total, fmt.Errorf("store: sweep attack histories: %w", err)
	}

	// Last-seen times of addresses without a verdict. The ones of deleted
	// verdicts went with them.
	n, err = s.sweepBucket(bucketSeen, func(tx *bolt.Tx, k, v []byte) (Expired, error) {
		if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= cleanBefore {
			return Expired{}, nil
		}
		if len(k) == 16 && s.verdicts != nil && !s.verdicts.mayHave([16]byte(k)) {
			return Expired{Seen: 1}, nil
		}
		if tx.Bucket(bucketVerdicts).Get(k) != nil {
			return Expired{}, nil
		}
		return Expired{Seen: 1}, nil
	}, nil)
	total.add(n)
	if err != nil {
		return total, fmt.Errorf("store: sweep last-seen times: %w", err)
	}
	return total, nil
}

// verdictExpired classifies a stored verdict value: what deleting it
// counts (zero: it stays).
func verdictExpired(v []byte, cleanBefore, proxyBefore int64) (Expired, error) {
	if len(v) < 8 {
		return Expired{}, fmt.Errorf("stored verdict of %d bytes", len(v))
	}
	inferred := int64(binary.BigEndian.Uint64(v) ^ (1 << 63))
	if inferred >= cleanBefore {
		return Expired{}, nil // young enough for either kind
	}
	proxy, err := storedProxy(v[8:])
	if err != nil {
		return Expired{}, err
	}
	switch {
	case !proxy:
		return Expired{Clean: 1}, nil
	case inferred < proxyBefore:
		return Expired{Proxy: 1}, nil
	}
	return Expired{}, nil
}

// proxyField is styx.v1.Verdict's proxy field number.
const proxyField = 2

// storedProxy reads the proxy flag of an encoded styx.v1.Verdict without
// decoding the rest: the encoder writes fields in number order and the
// stored encoding has no address (field 1), so the flag, when set, is the
// first field. The scan does not rely on that order.
func storedProxy(b []byte) (bool, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, fmt.Errorf("decode verdict: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == proxyField && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false, fmt.Errorf("decode verdict: %w", protowire.ParseError(n))
			}
			return v != 0, nil
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return false, fmt.Errorf("decode verdict: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return false, nil // proto3 leaves false out
}

// sweepBucket deletes the entries of bucket that expired says go, in
// chunks (see sweepScan and sweepChunk). expired sees each entry in a
// read transaction, then again in the write transaction that deletes it;
// also (may be nil) runs in that transaction for each deleted key. It
// returns what it deleted.
func (s *Store) sweepBucket(bucket []byte, expired func(tx *bolt.Tx, k, v []byte) (Expired, error), also func(tx *bolt.Tx, k []byte) (Expired, error)) (Expired, error) {
	var total Expired
	var from []byte // the last key scanned; nil: start at the first
	for done := false; !done; {
		var doomed [][]byte
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			k, v := c.First()
			if from != nil {
				if k, v = c.Seek(from); k != nil && bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			for n := 0; ; n++ {
				if k == nil {
					done = true
					return nil
				}
				if n == sweepScan || len(doomed) == sweepChunk {
					return nil
				}
				e, err := expired(tx, k, v)
				if err != nil {
					return err
				}
				if e != (Expired{}) {
					doomed = append(doomed, bytes.Clone(k))
				}
				from = bytes.Clone(k)
				k, v = c.Next()
			}
		})
		if err != nil {
			return total, err
		}
		if len(doomed) == 0 {
			continue
		}
		if s.betweenSweepTxns != nil {
			s.betweenSweepTxns()
		}
		var chunk Expired
		err = s.db.Update(func(tx *bolt.Tx) error {
			chunk = Expired{}
			b := tx.Bucket(bucket)
			for _, k := range doomed {
				v := b.Get(k)
				if v == nil {
					continue
				}
				e, err := expired(tx, k, v)
				if err != nil {
					return err
				}
				if e == (Expired{}) {
					continue // written again since the scan
				}
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("delete %x: %w", k, err)
				}
				if also != nil {
					a, err := also(tx, k)
					if err != nil {
						return err
					}
					e.add(a)
				}
				chunk.add(e)
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total.add(chunk)
		s.expired.add(chunk)
		runtime.Gosched()
	}
	return total, nil
}

// runSweeps sweeps at once, then every Config.SweepEvery, until ctx
// ends. Without a retention it only waits.
func (s *Store) runSweeps(ctx context.Context) {
	if s.cfg.Retention == (Retention{}) {
		return
	}
	tick := time.NewTicker(cmp.Or(s.cfg.SweepEvery, DefaultSweepEvery))
	defer tick.Stop()
	for {
		start := time.Now()
		e, err := s.Sweep(start)
		if err != nil {
			s.log.Error().Err(err).Msg("sweep expired entries")
		}
		s.log.Debug().Uint64("clean", e.Clean).Uint64("proxy", e.Proxy).Uint64("attacks", e.Attacks).
			Uint64("seen", e.Seen).Dur("took", time.Since(start)).Msg("swept expired entries")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// FileSize is the size of the store's file in bytes.
func (s *Store) FileSize() (int64, error) {
	fi, err := os.Stat(s.cfg.Path)
	if err != nil {
		return 0, fmt.Errorf("store: file size: %w", err)
	}
	return fi.Size(), nil
}

// Register adds the store's retention metrics to reg:
// styx_node_store_expired_total{kind} and styx_node_store_bytes.
func (s *Store) Register(reg prometheus.Registerer) error {
	const namespace = "styx_node"
	expired := func(kind string, f func(Expired) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_expired_total",
			Help:        "Store entries deleted by the retention sweep, by kind (clean and proxy verdicts, attack histories, last-seen times).",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(f(s.ExpiredTotal())) })
	}
	cs := []prometheus.Collector{
		expired("clean", func(e Expired) uint64 { return e.Clean }),
		expired("proxy", func(e Expired) uint64 { return e.Proxy }),
		expired("attacks", func(e Expired) uint64 { return e.Attacks }),
		expired("seen", func(e Expired) uint64 { return e.Seen }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "store_bytes", Help: "Size of the store's file in bytes.",
		}, func() float64 {
			n, err := s.FileSize()
			if err != nil {
				return 0
			}
			return float64(n)
		}),
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
