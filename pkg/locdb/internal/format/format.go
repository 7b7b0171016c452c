package format

import (
	"hash"
	"io"
)

// Magic is the 7-byte file magic; Version the only format version known.
const (
	Magic   = "LOCDBXX"
	Version = 1
)

// Header layout: every integer is big-endian.
const (
	HeaderSize = 4200

	OffVersion     = 7
	OffCreatedAt   = 8  // u64 Unix seconds
	OffVendor      = 16 // u32 pool offset
	OffDescription = 20 // u32 pool offset
	OffLicense     = 24 // u32 pool offset

	// Section descriptors: u32 offset then u32 length in bytes.
	OffAS        = 28
	OffNetworks  = 36
	OffTree      = 44
	OffCountries = 52
	OffPool      = 60

	OffSig1Len = 68 // u16
	OffSig2Len = 70 // u16
	OffSig1    = 72
	OffSig2    = 2120
	MaxSigLen  = 2048

	// Bytes [UnsignedStart, UnsignedEnd) — both signature lengths and both
	// signature slots — are read as zeros when hashing for the signature.
	UnsignedStart = OffSig1Len
	UnsignedEnd   = OffSig2 + MaxSigLen
)

// Record sizes in bytes.
const (
	ASSize      = 8  // u32 number, u32 name
	NodeSize    = 12 // u32 zero child, u32 one child, u32 network index
	NetworkSize = 12 // [2]byte country, 2 pad, u32 ASN, u16 flags, 2 pad
	CountrySize = 8  // [2]byte code, [2]byte continent, u32 name
)

// NoNetwork is the network index of a tree node that carries no network.
const NoNetwork = 0xFFFFFFFF

// HashSigned feeds h the signed view of a file of the given size: the
// whole file with [UnsignedStart, UnsignedEnd) read as zeros. It streams
// through a small buffer; nothing else is copied. size must be at least
// HeaderSize.
func HashSigned(h hash.Hash, file io.ReaderAt, size int64) error {
	var zeros [UnsignedEnd - UnsignedStart]byte
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(file, 0, UnsignedStart), buf); err != nil {
		return err
	}
	h.Write(zeros[:])
	_, err := io.CopyBuffer(h, io.NewSectionReader(file, UnsignedEnd, size-UnsignedEnd), buf)
	return err
}
