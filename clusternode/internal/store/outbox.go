package store

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	bolt "go.etcd.io/bbolt"

	"github.com/styx-inference/styx/pkg/columns"
)

// bucketSightings is the sighting outbox: the sightings the uplink has
// accepted and not yet seen resolved, so that a restarted node submits
// them again. It is created by the first write (a file from before it
// simply has none).
var bucketSightings = []byte("sighting_outbox")

// sightingValueSize is a sighting outbox value: the 16-byte address
// (IPv4 as IPv4-mapped IPv6), then the time it was seen in 8 bytes of
// big-endian Unix nanoseconds.
const sightingValueSize = 16 + 8

// SaveSightings writes add to the sighting outbox and deletes the ids in
// remove from it, in one transaction (the uplink's group commit). Ids
// absent from the outbox are ignored, so a removal may be repeated.
func (s *Store) SaveSightings(add []columns.Sighting, remove []uint64) error {
	if len(add) == 0 && len(remove) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketSightings)
		if err != nil {
			return err
		}
		// Values live until the commit: one slab holds them all.
		slab := make([]byte, sightingValueSize*len(add))
		for i, sg := range add {
			if !sg.Addr.IsValid() {
				return fmt.Errorf("sighting %d: invalid address", sg.ID)
			}
			v := slab[i*sightingValueSize : (i+1)*sightingValueSize : (i+1)*sightingValueSize]
			a := sg.Addr.As16()
			copy(v, a[:])
			binary.BigEndian.PutUint64(v[16:], uint64(sg.Seen))
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], sg.ID)
			if err := b.Put(k[:], v); err != nil {
				return fmt.Errorf("put sighting %d: %w", sg.ID, err)
			}
		}
		for _, id := range remove {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], id)
			if err := b.Delete(k[:]); err != nil {
				return fmt.Errorf("delete sighting %d: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save %d sightings, remove %d: %w", len(add), len(remove), err)
	}
	return nil
}

// PendingSightings returns the sightings in the outbox, by id (addresses
// normalized, see Normalize).
func (s *Store) PendingSightings() ([]columns.Sighting, error) {
	var out []columns.Sighting
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSightings)
		if b == nil {
			return nil
		}
		out = make([]columns.Sighting, 0, b.Stats().KeyN)
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) != sightingValueSize {
				return fmt.Errorf("sighting outbox entry of %d+%d bytes", len(k), len(v))
			}
			out = append(out, columns.Sighting{
				ID:   binary.BigEndian.Uint64(k),
				Addr: netip.AddrFrom16([16]byte(v[:16])).Unmap(),
				Seen: int64(binary.BigEndian.Uint64(v[16:])),
			})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read sighting outbox: %w", err)
	}
	return out, nil
}
