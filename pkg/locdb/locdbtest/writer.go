package locdbtest

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// Country is one country record.
type Country struct {
	Code      string // two letters, such as "US"
	Continent string // two letters, such as "NA"; "" for none
	Name      string
}

// AS is one autonomous-system record.
type AS struct {
	Number uint32
	Name   string
}

// Network is one network. IPv4 prefixes (and IPv4-mapped IPv6 ones) are
// stored under ::ffff:0:0/96 as the format requires.
type Network struct {
	Prefix  netip.Prefix
	Country string // two letters, "" for unknown
	ASN     uint32 // 0 for none
	Flags   locdb.Flags
}

// Database describes a file to write.
type Database struct {
	CreatedAt   time.Time // zero writes 0 (1970-01-01)
	Vendor      string
	Description string
	License     string

	Countries []Country // written sorted by code
	ASes      []AS      // written sorted by number
	Networks  []Network // a prefix may appear once

	// DeadEnds are trie paths created without a network at their end: a
	// lookup that follows one must fall back to the last network above it.
	DeadEnds []netip.Prefix

	// Signers[0] and Signers[1] sign slot 1 and slot 2; nil leaves a slot
	// empty.
	Signers [2]*ecdsa.PrivateKey

	// PageAlign starts every section on a 4096-byte boundary, like the
	// reference writer; otherwise sections are packed (8-byte aligned),
	// which keeps fuzz seeds small.
	PageAlign bool
}

// trie building

type wnode struct {
	child [2]int32 // index in nodes, -1 for none
	net   int32    // index in Database.Networks, -1 for none
}

type trie struct{ nodes []wnode }

func (t *trie) add() int32 {
	t.nodes = append(t.nodes, wnode{child: [2]int32{-1, -1}, net: -1})
	return int32(len(t.nodes) - 1)
}

// path walks (creating) the nodes of p and returns the last one.
func (t *trie) path(p netip.Prefix) int32 {
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	n := int32(0)
	for d := range bits {
		bit := a[d/8] >> (7 - d%8) & 1
		c := t.nodes[n].child[bit]
		if c < 0 {
			c = t.add()
			t.nodes[n].child[bit] = c
		}
		n = c
	}
	return n
}

// Bytes lays the database out in format version 1 and signs it.
func (db *Database) Bytes() ([]byte, error) {
	// String pool: offset 0 is the empty string.
	pool := []byte{0}
	offsets := map[string]uint32{"": 0}
	str := func(s string) (uint32, error) {
		if o, ok := offsets[s]; ok {
			return o, nil
		}
		if strings.Contains(s, "\x00") {
			return 0, fmt.Errorf("string %q contains NUL", s)
		}
		o := uint32(len(pool))
		pool = append(append(pool, s...), 0)
		offsets[s] = o
		return o, nil
	}
	code := func(what, s string) ([2]byte, error) {
		switch len(s) {
		case 0:
			return [2]byte{}, nil
		case 2:
			return [2]byte{s[0], s[1]}, nil
		}
		return [2]byte{}, fmt.Errorf("%s %q is not two characters", what, s)
	}

	var hdr [format.HeaderSize]byte
	copy(hdr[:], format.Magic)
	hdr[format.OffVersion] = format.Version
	if !db.CreatedAt.IsZero() {
		binary.BigEndian.PutUint64(hdr[format.OffCreatedAt:], uint64(db.CreatedAt.Unix()))
	}
	for _, f := range []struct {
		off int
		s   string
	}{{format.OffVendor, db.Vendor}, {format.OffDescription, db.Description}, {format.OffLicense, db.License}} {
		o, err := str(f.s)
		if err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(hdr[f.off:], o)
	}

	// AS section.
	ases := slices.SortedFunc(slices.Values(db.ASes), func(a, b AS) int { return cmp.Compare(a.Number, b.Number) })
	var asSec []byte
	for i, as := range ases {
		if i > 0 && ases[i-1].Number == as.Number {
			return nil, fmt.Errorf("AS%d listed twice", as.Number)
		}
		o, err := str(as.Name)
		if err != nil {
			return nil, err
		}
		asSec = binary.BigEndian.AppendUint32(asSec, as.Number)
		asSec = binary.BigEndian.AppendUint32(asSec, o)
	}

	// Country section.
	countries := slices.SortedFunc(slices.Values(db.Countries), func(a, b Country) int { return cmp.Compare(a.Code, b.Code) })
	var countrySec []byte
	for i, c := range countries {
		if i > 0 && countries[i-1].Code == c.Code {
			return nil, fmt.Errorf("country %s listed twice", c.Code)
		}
		cc, err := code("country code", c.Code)
		if err != nil {
			return nil, err
		}
		if c.Code == "" {
			return nil, errors.New("country without a code")
		}
		cont, err := code("continent code", c.Continent)
		if err != nil {
			return nil, err
		}
		o, err := str(c.Name)
		if err != nil {
			return nil, err
		}
		countrySec = append(countrySec, cc[0], cc[1], cont[0], cont[1])
		countrySec = binary.BigEndian.AppendUint32(countrySec, o)
	}

	// Trie.
	t := &trie{}
	t.add()
	for i, n := range db.Networks {
		if !n.Prefix.IsValid() {
			return nil, fmt.Errorf("network %d: invalid prefix", i)
		}
		p := n.Prefix.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		node := t.path(p)
		if t.nodes[node].net >= 0 {
			return nil, fmt.Errorf("network %s listed twice", n.Prefix)
		}
		t.nodes[node].net = int32(i)
	}
	for _, p := range db.DeadEnds {
		if !p.IsValid() {
			return nil, errors.New("invalid dead-end prefix")
		}
		t.path(p.Masked())
	}

	// Number nodes breadth first (root 0), networks in the same order.
	order := []int32{0}
	for i := 0; i < len(order); i++ {
		for _, c := range t.nodes[order[i]].child {
			if c >= 0 {
				order = append(order, c)
			}
		}
	}
	newIndex := make([]uint32, len(t.nodes))
	for i, n := range order {
		newIndex[n] = uint32(i)
	}
	var treeSec, netSec []byte
	netIndex := uint32(0)
	for _, old := range order {
		n := t.nodes[old]
		for _, c := range n.child {
			v := uint32(0)
			if c >= 0 {
				v = newIndex[c]
			}
			treeSec = binary.BigEndian.AppendUint32(treeSec, v)
		}
		if n.net < 0 {
			treeSec = binary.BigEndian.AppendUint32(treeSec, format.NoNetwork)
			continue
		}
		treeSec = binary.BigEndian.AppendUint32(treeSec, netIndex)
		netIndex++
		nw := db.Networks[n.net]
		cc, err := code("country code", nw.Country)
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", nw.Prefix, err)
		}
		netSec = append(netSec, cc[0], cc[1], 0, 0)
		netSec = binary.BigEndian.AppendUint32(netSec, nw.ASN)
		netSec = binary.BigEndian.AppendUint16(netSec, uint16(nw.Flags))
		netSec = append(netSec, 0, 0)
	}

	// Layout: header, AS, tree, networks, countries, pool.
	out := hdr[:]
	place := func(off int, sec []byte) {
		align := 8
		if db.PageAlign {
			align = 4096
		}
		for len(out)%align != 0 {
			out = append(out, 0)
		}
		binary.BigEndian.PutUint32(out[off:], uint32(len(out)))
		binary.BigEndian.PutUint32(out[off+4:], uint32(len(sec)))
		out = append(out, sec...)
	}
	place(format.OffAS, asSec)
	place(format.OffTree, treeSec)
	place(format.OffNetworks, netSec)
	place(format.OffCountries, countrySec)
	place(format.OffPool, pool)

	if err := sign(out, db.Signers); err != nil {
		return nil, err
	}
	return out, nil
}

// sign fills the signature slots of file.
func sign(file []byte, signers [2]*ecdsa.PrivateKey) error {
	if signers[0] == nil && signers[1] == nil {
		return nil
	}
	h := sha256.New()
	if err := format.HashSigned(h, bytes.NewReader(file), int64(len(file))); err != nil {
		return err
	}
	digest := h.Sum(nil)
	slots := [2]struct{ lenOff, off int }{{format.OffSig1Len, format.OffSig1}, {format.OffSig2Len, format.OffSig2}}
	for i, key := range signers {
		if key == nil {
			continue
		}
		sig, err := ecdsa.SignASN1(rand.Reader, key, digest)
		if err != nil {
			return fmt.Errorf("sign slot %d: %w", i+1, err)
		}
		if len(sig) > format.MaxSigLen {
			return fmt.Errorf("sign slot %d: %d-byte signature", i+1, len(sig))
		}
		binary.BigEndian.PutUint16(file[slots[i].lenOff:], uint16(len(sig)))
		copy(file[slots[i].off:], sig)
	}
	return nil
}

// WriteFile writes the database to path.
func (db *Database) WriteFile(path string) error {
	b, err := db.Bytes()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// WriteTemp writes the database into a fresh file under tb.TempDir and
// returns its path; it fails the test on error.
func WriteTemp(tb testing.TB, db *Database) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "location.db")
	if err := db.WriteFile(path); err != nil {
		tb.Fatalf("write fixture database: %v", err)
	}
	return path
}

// GenerateKey makes a P-521 key pair, writes the public half as PEM under
// tb.TempDir and returns the private key and the PEM file's path.
func GenerateKey(tb testing.TB) (*ecdsa.PrivateKey, string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		tb.Fatalf("marshal public key: %v", err)
	}
	path := filepath.Join(tb.TempDir(), "signing-key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		tb.Fatalf("write public key: %v", err)
	}
	return key, path
}
