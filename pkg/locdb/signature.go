package locdb

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// LoadPublicKey reads a PEM file holding an ECDSA public key (PKIX,
// "PUBLIC KEY"); text around the PEM block is ignored.
func LoadPublicKey(path string) (*ecdsa.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("locdb: signing key: %w", err)
	}
	for rest := raw; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("locdb: signing key %s: no PEM public key", path)
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("locdb: signing key %s: %w", path, err)
		}
		key, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("locdb: signing key %s: %T is not an ECDSA key", path, pub)
		}
		return key, nil
	}
}

// verify checks that one of sigs (empty ones are skipped) is a valid
// signature of the signed bytes of f (size bytes long) under the key at
// keyPath.
func verify(keyPath string, f *os.File, size int64, sigs [][]byte) error {
	key, err := LoadPublicKey(keyPath)
	if err != nil {
		return err
	}
	present := false
	for _, s := range sigs {
		present = present || len(s) > 0
	}
	if !present {
		return fmt.Errorf("file is not signed: %w", ErrBadSignature)
	}
	// Read with pread rather than through the mapping: page-faulting the
	// whole mapping in costs more than the copy into a small buffer.
	h := sha256.New()
	if err := format.HashSigned(h, f, size); err != nil {
		return fmt.Errorf("read for signature check: %w", err)
	}
	digest := h.Sum(nil)
	for _, s := range sigs {
		if len(s) > 0 && ecdsa.VerifyASN1(key, digest, s) {
			return nil
		}
	}
	return fmt.Errorf("no signature slot verifies with the key in %s: %w", keyPath, ErrBadSignature)
}
