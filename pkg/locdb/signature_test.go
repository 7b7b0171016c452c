package locdb_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/internal/format"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

func TestSignature(t *testing.T) {
	key, keyPath := locdbtest.GenerateKey(t)
	other, otherPath := locdbtest.GenerateKey(t)
	signed := func(s1, s2 *ecdsa.PrivateKey) []byte {
		fx := mainFixture()
		fx.Signers = [2]*ecdsa.PrivateKey{s1, s2}
		return fixtureBytes(t, fx)
	}
	flip := func(b []byte, off int) []byte {
		b = append([]byte(nil), b...)
		b[off] ^= 0x01
		return b
	}
	good := signed(key, nil)
	tests := []struct {
		name    string
		file    []byte
		keyPath string
		wantErr error // nil: opens
	}{
		{"slot 1", good, keyPath, nil},
		{"slot 2", signed(nil, key), keyPath, nil},
		{"both slots", signed(key, key), keyPath, nil},
		{"slot 1 other key, slot 2 right", signed(other, key), keyPath, nil},
		{"slot 1 right, slot 2 other key", signed(key, other), keyPath, nil},
		{"other key", good, otherPath, locdb.ErrBadSignature},
		{"both slots other key", signed(other, other), keyPath, locdb.ErrBadSignature},
		{"unsigned", signed(nil, nil), keyPath, locdb.ErrBadSignature},
		{"byte after header flipped", flip(good, format.HeaderSize+1), keyPath, locdb.ErrBadSignature},
		{"last byte flipped", flip(good, len(good)-1), keyPath, locdb.ErrBadSignature},
		{"created_at flipped", flip(good, format.OffCreatedAt+7), keyPath, locdb.ErrBadSignature},
		{"header padding flipped", flip(good, format.UnsignedEnd+3), keyPath, locdb.ErrBadSignature},
		{"signature flipped", flip(good, format.OffSig1+20), keyPath, locdb.ErrBadSignature},
		{"unused slot 2 flipped", flip(good, format.OffSig2+5), keyPath, nil}, // not covered by the signature
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeBytes(t, tt.file)
			db, err := locdb.Open(locdb.Config{Path: path, KeyPath: tt.keyPath})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if _, ok := db.Lookup(mustAddr("8.8.8.8")); !ok {
					t.Error("8.8.8.8 not found")
				}
				db.Close()
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open: %v, want %v", err, tt.wantErr)
			}
			// SkipVerify opens what only fails verification.
			db, err = locdb.Open(locdb.Config{Path: path, KeyPath: tt.keyPath, SkipVerify: true})
			if err != nil {
				t.Fatalf("Open with SkipVerify: %v", err)
			}
			db.Close()
		})
	}
}

func TestSignatureKeyErrors(t *testing.T) {
	key, _ := locdbtest.GenerateKey(t)
	fx := mainFixture()
	fx.Signers[0] = key
	path := locdbtest.WriteTemp(t, fx)
	dir := t.TempDir()

	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("not a key\n"), 0o644)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), 0o644)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	ed := filepath.Join(dir, "ed25519.pem")
	os.WriteFile(ed, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)

	for _, kp := range []string{filepath.Join(dir, "missing.pem"), notPEM, garbage, ed} {
		t.Run(filepath.Base(kp), func(t *testing.T) {
			db, err := locdb.Open(locdb.Config{Path: path, KeyPath: kp})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if errors.Is(err, locdb.ErrBadSignature) || errors.Is(err, locdb.ErrCorrupt) {
				t.Errorf("key problem reported as a file problem: %v", err)
			}
		})
	}
}

// TestLoadPublicKeyWithPreamble reads a PEM file with text before the block,
// as the distribution's key file has.
func TestLoadPublicKeyWithPreamble(t *testing.T) {
	key, keyPath := locdbtest.GenerateKey(t)
	raw, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	withText := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(withText, append([]byte("Created: today\nAlgorithm: P-521\n"), raw...), 0o644)
	got, err := locdb.LoadPublicKey(withText)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(&key.PublicKey) {
		t.Error("loaded key differs")
	}
}
