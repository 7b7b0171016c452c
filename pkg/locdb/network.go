package locdb

import (
	"net/netip"
	"strings"
	"unsafe"
)

// Flags are the per-network flags of the database.
type Flags uint16

// The flags defined by format version 1.
const (
	FlagAnonymousProxy    Flags = 1
	FlagSatelliteProvider Flags = 2
	FlagAnycast           Flags = 4
	FlagDrop              Flags = 8
)

// AnonymousProxy reports whether the network is an anonymous proxy.
func (f Flags) AnonymousProxy() bool { return f&FlagAnonymousProxy != 0 }

// SatelliteProvider reports whether the network belongs to a satellite provider.
func (f Flags) SatelliteProvider() bool { return f&FlagSatelliteProvider != 0 }

// Anycast reports whether the network is anycast.
func (f Flags) Anycast() bool { return f&FlagAnycast != 0 }

// Drop reports whether the network is hostile and safe to drop.
func (f Flags) Drop() bool { return f&FlagDrop != 0 }

var flagNames = [...]struct {
	f    Flags
	name string
}{
	{FlagAnonymousProxy, "anonymous_proxy"},
	{FlagSatelliteProvider, "satellite"},
	{FlagAnycast, "anycast"},
	{FlagDrop, "drop"},
}

// String lists the set flags, comma separated ("anycast",
// "anonymous_proxy,drop"); unknown bits are shown as hex; "" when none is set.
func (f Flags) String() string {
	var b strings.Builder
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(fn.name)
			f &^= fn.f
		}
	}
	if f != 0 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		const hex = "0123456789abcdef"
		b.WriteString("0x")
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hex[f>>shift&0xF])
		}
	}
	return b.String()
}

// Network is the answer to a lookup.
//
// ASName is a view into the memory-mapped file, not a copy: it is valid
// while the DB is open — until Close, or until the DB is garbage-collected
// for want of references — and reading it afterwards crashes the program.
// Code that keeps a Network longer must keep n.Clone() instead. Every other
// string is a heap or static string and stays valid.
type Network struct {
	// Prefix is the matching network. It is an IPv4 prefix for IPv4 (and
	// IPv4-mapped) addresses matched inside ::ffff:0:0/96, and an IPv6
	// prefix otherwise — including an IPv6 network shorter than /96, such as
	// ::/8, that covers an IPv4 address.
	Prefix        netip.Prefix
	Country       string // ISO 3166 code such as "US", "" when unknown
	CountryName   string // "" when unknown or when the code has no country record
	Continent     string // continent code such as "NA", "" when unknown
	ContinentName string // such as "North America", "" when unknown
	ASN           uint32 // 0 when none
	ASName        string // "" when the ASN has no AS record
	Flags         Flags
}

// Clone returns n with ASName copied to the heap, safe to keep after the
// DB is closed.
func (n Network) Clone() Network {
	n.ASName = strings.Clone(n.ASName)
	return n
}

// ContinentName returns the English name of one of the seven continent codes
// used by the database (AF AN AS EU NA OC SA), or "".
func ContinentName(code string) string {
	switch code {
	case "AF":
		return "Africa"
	case "AN":
		return "Antarctica"
	case "AS":
		return "Asia"
	case "EU":
		return "Europe"
	case "NA":
		return "North America"
	case "OC":
		return "Oceania"
	case "SA":
		return "South America"
	}
	return ""
}

// Two-byte codes (countries, continents) are made of printable ASCII; every
// such pair is pre-built once so that a lookup never allocates a string.
const (
	codeFirst = 0x20
	codeLast  = 0x7e
	codeRange = codeLast - codeFirst + 1
)

var codeBytes = func() []byte {
	b := make([]byte, 0, codeRange*codeRange*2)
	for c0 := codeFirst; c0 <= codeLast; c0++ {
		for c1 := codeFirst; c1 <= codeLast; c1++ {
			b = append(b, byte(c0), byte(c1))
		}
	}
	return b
}()

// codeIndex returns the slot of a printable two-byte code, or -1.
func codeIndex(c0, c1 byte) int {
	if c0 < codeFirst || c0 > codeLast || c1 < codeFirst || c1 > codeLast {
		return -1
	}
	return int(c0-codeFirst)*codeRange + int(c1-codeFirst)
}

// codeString returns the shared string for slot i of codeIndex.
func codeString(i int) string {
	return unsafe.String(&codeBytes[2*i], 2)
}
