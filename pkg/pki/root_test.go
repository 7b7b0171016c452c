package pki_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/pki"
)

func TestRootLayout(t *testing.T) {
	if got := pki.CADir("/r"); got != filepath.Join("/r", "ca") {
		t.Errorf("CADir = %q", got)
	}
	if got := pki.IdentityDir("/r", pki.Identity{Role: pki.Worker, ID: "w1"}); got != filepath.Join("/r", "worker-w1") {
		t.Errorf("IdentityDir = %q", got)
	}
}

func TestInitRoot(t *testing.T) {
	root := t.TempDir()
	ca, created, err := pki.InitRoot(root, "my CA", 48*time.Hour)
	if err != nil || !created {
		t.Fatalf("InitRoot = %v, %v; want a new CA", created, err)
	}
	if ca.Cert.Subject.CommonName != "my CA" {
		t.Errorf("CN %q", ca.Cert.Subject.CommonName)
	}
	if life := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); life != 48*time.Hour+5*time.Minute {
		t.Errorf("CA lifetime %s, want 48h and the clock skew", life)
	}
	onDisk, err := pki.LoadCA(pki.CADir(root))
	if err != nil || !onDisk.Cert.Equal(ca.Cert) {
		t.Fatalf("the CA is not saved in CADir: %v", err)
	}
	// Idempotent: the second call loads the same CA and makes nothing.
	again, created, err := pki.InitRoot(root, "another name", time.Hour)
	if err != nil || created {
		t.Fatalf("second InitRoot = %v, %v; want the saved CA", created, err)
	}
	if !again.Cert.Equal(ca.Cert) || !again.Key.Equal(ca.Key) {
		t.Error("second InitRoot returned another CA")
	}
}

func TestInitRootRefusesABrokenCA(t *testing.T) {
	for name, breakIt := range map[string]func(dir string) error{
		"corrupt key": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, pki.CAKeyFile), []byte("junk"), 0o600)
		},
		"corrupt certificate": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, pki.CAFile), []byte("junk"), 0o644)
		},
		"lost key": func(dir string) error {
			return os.Remove(filepath.Join(dir, pki.CAKeyFile))
		},
		"lost certificate": func(dir string) error {
			return os.Remove(filepath.Join(dir, pki.CAFile))
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if _, _, err := pki.InitRoot(root, "CA", 0); err != nil {
				t.Fatal(err)
			}
			dir := pki.CADir(root)
			if err := breakIt(dir); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			if ca, created, err := pki.InitRoot(root, "CA", 0); err == nil {
				t.Fatalf("InitRoot over a broken CA = created %v, %v", created, ca.Cert.Subject)
			}
			if after := snapshot(t, dir); !equalSnapshots(before, after) {
				t.Error("InitRoot changed the files of a broken CA")
			}
		})
	}
}

// snapshot is every file of a directory and its content.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range entries(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func TestEnsureIdentity(t *testing.T) {
	root := t.TempDir()
	ca, _, err := pki.InitRoot(root, "CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	id := pki.Identity{Role: pki.Worker, ID: "w1"}
	dir, issued, err := pki.EnsureIdentity(root, ca, id, pki.IssueOptions{DNSNames: []string{"w1.example"}})
	if err != nil || !issued {
		t.Fatalf("EnsureIdentity = %v, %v; want issued", issued, err)
	}
	if dir != pki.IdentityDir(root, id) {
		t.Errorf("dir %q, want %q", dir, pki.IdentityDir(root, id))
	}
	c := readCert(t, filepath.Join(dir, pki.CertFile))
	if got, err := pki.FromCert(c); err != nil || got != id || c.CheckSignatureFrom(ca.Cert) != nil {
		t.Fatalf("issued %v (%v), not signed by the CA or not %v", got, err, id)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "w1.example" {
		t.Errorf("options not used: DNSNames %v", c.DNSNames)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, pki.CAFile)); !bytes.Equal(b, ca.CertPEM) {
		t.Error("ca.crt is not the CA")
	}
	if _, err := pki.Load(dir, nopLog); err != nil {
		t.Fatalf("the directory does not load: %v", err)
	}

	// Idempotent: a fresh certificate is kept, files untouched.
	before := snapshot(t, dir)
	for range 2 {
		d, issued, err := pki.EnsureIdentity(root, ca, id, pki.IssueOptions{})
		if err != nil || issued || d != dir {
			t.Fatalf("EnsureIdentity again = %q, %v, %v; want %q kept", d, issued, err, dir)
		}
	}
	if !equalSnapshots(before, snapshot(t, dir)) {
		t.Error("a kept identity's files changed")
	}

	// Another identity gets its own directory.
	d2, issued, err := pki.EnsureIdentity(root, ca, pki.Identity{Role: pki.Node, ID: "w1"}, pki.IssueOptions{})
	if err != nil || !issued || d2 == dir {
		t.Fatalf("a node w1 beside worker w1: %q, %v, %v", d2, issued, err)
	}
	if !equalSnapshots(before, snapshot(t, dir)) {
		t.Error("issuing node/w1 changed worker/w1's files")
	}

	// Refused issue: an error, nothing written.
	short, err := pki.NewCA("short", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, issued, err := pki.EnsureIdentity(root, short, pki.Identity{Role: pki.Admin, ID: "a"}, pki.IssueOptions{}); err == nil || issued {
		t.Errorf("a 30-day certificate from a one-hour CA: %v, %v", issued, err)
	}
	if _, err := os.Stat(pki.IdentityDir(root, pki.Identity{Role: pki.Admin, ID: "a"})); err == nil {
		t.Error("a refused issue left a directory")
	}
}

// TestEnsureIdentityReissues changes one thing in a fresh identity
// directory and expects EnsureIdentity to issue again.
func TestEnsureIdentityReissues(t *testing.T) {
	id := pki.Identity{Role: pki.Worker, ID: "w1"}
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA // returns the CA to ensure with
		reissue bool
	}{
		{name: "nothing changed", reissue: false, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA { return ca }},
		{name: "another CA", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			return newCA(t, 0, time.Now())
		}},
		{name: "ca.crt replaced", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			writeFile(t, filepath.Join(dir, pki.CAFile), newCA(t, 0, time.Now()).CertPEM)
			return ca
		}},
		{name: "ca.crt missing", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			remove(t, filepath.Join(dir, pki.CAFile))
			return ca
		}},
		{name: "key missing", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			remove(t, filepath.Join(dir, pki.KeyFile))
			return ca
		}},
		{name: "certificate missing", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			remove(t, filepath.Join(dir, pki.CertFile))
			return ca
		}},
		{name: "certificate corrupt", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			writeFile(t, filepath.Join(dir, pki.CertFile), []byte("junk"))
			return ca
		}},
		{name: "certificate of another identity", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			writeDir(t, issue(t, ca, pki.Identity{Role: pki.Worker, ID: "w2"}, pki.IssueOptions{}), dir, ca)
			return ca
		}},
		{name: "certificate of the same identity from another CA", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			other := newCA(t, 0, time.Now())
			// ca.crt stays this CA's: only the signature tells.
			writeFile(t, filepath.Join(dir, pki.CertFile), issue(t, other, id, pki.IssueOptions{}).CertPEM)
			return ca
		}},
		{name: "in the last third of its life", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			// 30 days from 21 days ago: 9 days left of 30.
			writeDir(t, issue(t, ca, id, pki.IssueOptions{Now: time.Now().Add(-21 * day)}), dir, ca)
			return ca
		}},
		{name: "a short one in its last third", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			// 3 hours from 2 hours 10 minutes ago (the skew adds 5 minutes of life).
			writeDir(t, issue(t, ca, id, pki.IssueOptions{Lifetime: 3 * time.Hour, Now: time.Now().Add(-130 * time.Minute)}), dir, ca)
			return ca
		}},
		{name: "expired", reissue: true, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			writeDir(t, issue(t, ca, id, pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)}), dir, ca)
			return ca
		}},
		{name: "older but more than a third left", reissue: false, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			// 30 days from 19 days ago: 11 days left of 30.
			writeDir(t, issue(t, ca, id, pki.IssueOptions{Now: time.Now().Add(-19 * day)}), dir, ca)
			return ca
		}},
		{name: "a short one with more than a third left", reissue: false, change: func(t *testing.T, root, dir string, ca *pki.CA) *pki.CA {
			writeDir(t, issue(t, ca, id, pki.IssueOptions{Lifetime: 3 * time.Hour, Now: time.Now().Add(-100 * time.Minute)}), dir, ca)
			return ca
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			ca, _, err := pki.InitRoot(root, "CA", 0)
			if err != nil {
				t.Fatal(err)
			}
			dir, _, err := pki.EnsureIdentity(root, ca, id, pki.IssueOptions{})
			if err != nil {
				t.Fatal(err)
			}
			use := tc.change(t, root, dir, ca)
			before := snapshot(t, dir)
			_, issued, err := pki.EnsureIdentity(root, use, id, pki.IssueOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if issued != tc.reissue {
				t.Fatalf("issued = %v, want %v", issued, tc.reissue)
			}
			if !issued {
				if !equalSnapshots(before, snapshot(t, dir)) {
					t.Error("files changed although nothing was issued")
				}
				return
			}
			// What was issued is fresh, from the CA given, and loads.
			c := readCert(t, filepath.Join(dir, pki.CertFile))
			if err := c.CheckSignatureFrom(use.Cert); err != nil {
				t.Errorf("re-issued certificate not from the CA given: %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, pki.CAFile)); !bytes.Equal(b, use.CertPEM) {
				t.Error("ca.crt is not the CA given")
			}
			if left := time.Until(c.NotAfter); left < 29*day {
				t.Errorf("re-issued certificate has %s left", left)
			}
			if _, err := pki.Load(dir, nopLog); err != nil {
				t.Errorf("re-issued directory does not load: %v", err)
			}
			if _, issued, _ := pki.EnsureIdentity(root, use, id, pki.IssueOptions{}); issued {
				t.Error("issued again right after re-issuing")
			}
		})
	}
}

func issue(t *testing.T, ca *pki.CA, id pki.Identity, o pki.IssueOptions) *pki.Issued {
	t.Helper()
	is, err := ca.Issue(id, o)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func writeDir(t *testing.T, is *pki.Issued, dir string, ca *pki.CA) {
	t.Helper()
	if err := is.WriteDir(dir, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
}
