package pki_test

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"

	"github.com/styx-inference/styx/pkg/pki"
)

func TestParseRole(t *testing.T) {
	want := []pki.Role{pki.Scheduler, pki.Worker, pki.Node, pki.Admin, pki.Trainer, pki.Etcd, pki.NATS}
	if len(pki.Roles) != len(want) {
		t.Fatalf("Roles = %v, want %v", pki.Roles, want)
	}
	for i, r := range want {
		if pki.Roles[i] != r {
			t.Fatalf("Roles = %v, want %v", pki.Roles, want)
		}
		got, err := pki.ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "root", "Worker", "worker ", "workers", "nat"} {
		if r, err := pki.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) = %q, want an error", s, r)
		}
	}
	// The error names the roles there are.
	_, err := pki.ParseRole("root")
	if err == nil || !strings.HasSuffix(err.Error(), `"root" (want one of scheduler, worker, node, admin, trainer, etcd, nats)`) {
		t.Errorf("ParseRole error %v does not list the roles", err)
	}
}

func TestNewIdentity(t *testing.T) {
	id, err := pki.NewIdentity("worker", "host-1.a_b:c")
	if err != nil || id != (pki.Identity{Role: pki.Worker, ID: "host-1.a_b:c"}) {
		t.Fatalf("NewIdentity = %v, %v", id, err)
	}
	for _, tc := range []struct{ role, id string }{
		{"pilot", "w1"},
		{"", "w1"},
		{"worker", ""},
		{"worker", "a/b"},
		{"worker", "a b"},
		{"worker", "a?b"},
		{"worker", strings.Repeat("x", 129)},
	} {
		if got, err := pki.NewIdentity(tc.role, tc.id); err == nil {
			t.Errorf("NewIdentity(%q, %q) = %v, want an error", tc.role, tc.id, got)
		}
	}
}

func TestIdentityForms(t *testing.T) {
	for _, r := range pki.Roles {
		id := pki.Identity{Role: r, ID: "a-1.b_c:d"}
		wantURI := "spiffe://styx/" + string(r) + "/a-1.b_c:d"
		if got := id.String(); got != wantURI {
			t.Errorf("%v.String() = %q, want %q", id, got, wantURI)
		}
		u := id.URI()
		if u.Scheme != "spiffe" || u.Host != pki.TrustDomain || u.Path != "/"+string(r)+"/a-1.b_c:d" {
			t.Errorf("URI() = %#v", u)
		}
		if got := id.CommonName(); got != string(r)+":a-1.b_c:d" {
			t.Errorf("CommonName() = %q", got)
		}
		// The URI survives its text form and parses back.
		parsed, err := url.Parse(id.String())
		if err != nil {
			t.Fatal(err)
		}
		back, err := pki.ParseURI(parsed)
		if err != nil || back != id {
			t.Errorf("ParseURI(%s) = %v, %v", parsed, back, err)
		}
		if id.IsZero() {
			t.Errorf("%v.IsZero()", id)
		}
	}
	if !(pki.Identity{}).IsZero() {
		t.Error("Identity{}.IsZero() = false")
	}
	if (pki.Identity{Role: pki.Worker}).IsZero() || (pki.Identity{ID: "w1"}).IsZero() {
		t.Error("a half-filled identity is not zero")
	}
}

func TestParseURI(t *testing.T) {
	if _, err := pki.ParseURI(nil); err == nil {
		t.Error("ParseURI(nil) succeeded")
	}
	for _, tc := range []struct {
		uri  string
		want pki.Identity // zero: refused
	}{
		{"spiffe://styx/worker/w1", pki.Identity{Role: pki.Worker, ID: "w1"}},
		{"spiffe://styx/admin/alice", pki.Identity{Role: pki.Admin, ID: "alice"}},
		{"spiffe://styx/nats/n-0", pki.Identity{Role: pki.NATS, ID: "n-0"}},
		// Other schemes and trust domains.
		{"https://styx/worker/w1", pki.Identity{}},
		{"spiffe://other/worker/w1", pki.Identity{}},
		{"spiffe://STYX/worker/w1", pki.Identity{}},
		{"spiffe://styx.example/worker/w1", pki.Identity{}},
		{"spiffe:styx/worker/w1", pki.Identity{}},
		{"spiffe:///worker/w1", pki.Identity{}},
		// Ports, users, queries, fragments.
		{"spiffe://styx:443/worker/w1", pki.Identity{}},
		{"spiffe://styx:/worker/w1", pki.Identity{}},
		{"spiffe://root@styx/worker/w1", pki.Identity{}},
		{"spiffe://styx/worker/w1?admin=1", pki.Identity{}},
		{"spiffe://styx/worker/w1?", pki.Identity{}},
		{"spiffe://styx/worker/w1#x", pki.Identity{}},
		// Path shapes.
		{"spiffe://styx/worker/w1/extra", pki.Identity{}},
		{"spiffe://styx/worker/w1/", pki.Identity{}},
		{"spiffe://styx//worker/w1", pki.Identity{}},
		{"spiffe://styx/worker", pki.Identity{}},
		{"spiffe://styx/", pki.Identity{}},
		{"spiffe://styx", pki.Identity{}},
		{"spiffe://styx/worker/w%2Fx", pki.Identity{}},
		// Other spellings of a valid identity.
		{"spiffe://styx/worker/w%31", pki.Identity{}},
		{"spiffe://styx/%77orker/w1", pki.Identity{}},
		// Unknown roles and bad ids.
		{"spiffe://styx/root/w1", pki.Identity{}},
		{"spiffe://styx/Worker/w1", pki.Identity{}},
		{"spiffe://styx/worker/", pki.Identity{}},
		{"spiffe://styx/worker/w%20x", pki.Identity{}},
		{"spiffe://styx/worker/" + strings.Repeat("x", 129), pki.Identity{}},
	} {
		u, err := url.Parse(tc.uri)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tc.uri, err)
		}
		got, err := pki.ParseURI(u)
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("ParseURI(%q) = %v, want an error", tc.uri, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURI(%q) = %v, %v; want %v", tc.uri, got, err, tc.want)
		}
	}
	// Build the oddities url.Parse does not produce by hand.
	for _, u := range []*url.URL{
		{Scheme: "spiffe", Host: "styx", Path: "/worker/w1", RawQuery: "a=b"},
		{Scheme: "spiffe", Host: "styx", Path: "/worker/w1", Fragment: "f"},
		{Scheme: "spiffe", Host: "styx", Path: "/worker/w1", User: url.User("u")},
		{Scheme: "spiffe", Host: "styx", Path: "/worker/w1", Opaque: "x"},
	} {
		if got, err := pki.ParseURI(u); err == nil {
			t.Errorf("ParseURI(%#v) = %v, want an error", u, got)
		}
	}
}

func uris(t *testing.T, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func TestFromCert(t *testing.T) {
	w1 := pki.Identity{Role: pki.Worker, ID: "w1"}
	for _, tc := range []struct {
		name string
		uris []string
		want pki.Identity // zero: refused
	}{
		{"none", nil, pki.Identity{}},
		{"only other schemes", []string{"https://styx/worker/w1", "urn:x"}, pki.Identity{}},
		{"one", []string{"spiffe://styx/worker/w1"}, w1},
		{"one beside other schemes", []string{"https://example.com/", "spiffe://styx/worker/w1"}, w1},
		{"two", []string{"spiffe://styx/worker/w1", "spiffe://styx/admin/a"}, pki.Identity{}},
		{"the same twice", []string{"spiffe://styx/worker/w1", "spiffe://styx/worker/w1"}, pki.Identity{}},
		{"one malformed", []string{"spiffe://styx/worker/w1/x"}, pki.Identity{}},
		{"another trust domain", []string{"spiffe://other/worker/w1"}, pki.Identity{}},
		{"a good and another trust domain", []string{"spiffe://styx/worker/w1", "spiffe://other/admin/a"}, pki.Identity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.FromCert(&x509.Certificate{URIs: uris(t, tc.uris...)})
			if tc.want.IsZero() {
				if err == nil {
					t.Fatalf("FromCert = %v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromCert = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestProvesWorker(t *testing.T) {
	for _, tc := range []struct {
		cert, worker string
		want         bool
	}{
		{"w1", "w1", true},
		{"w1", "w1-numa0", true},
		{"w1", "w1-numa1", true},
		{"w1", "w1-numa12", true},
		{"w1", "w1-numa9", true},
		{"w1", "w1-numa90", true},
		{"w1", "w1-numa/", false}, // the byte before '0'
		{"w1", "w1-numa:", false}, // the byte after '9'
		{"w1", "w1-numa9:", false},
		{"w1", "w1-numa0123", true},
		{"host.a", "host.a-numa3", true},
		{"w1", "w1-numa12345", false}, // more NUMA nodes than any host has
		{"w1", "w1-numa", false},
		{"w1", "w1-numaX", false},
		{"w1", "w1-numa1x", false},
		{"w1", "w1-numax1", false},
		{"w1", "w1-numa-1", false},
		{"w1", "w1-numa+1", false},
		{"w1", "w1-numa 1", false},
		{"w1", "w1-numa\u0663", false}, // a digit, but not an ASCII one
		{"w1", "w1-numa0-numa1", false},
		{"w1", "w1-NUMA0", false},
		{"w1", "w1numa0", false},
		{"w1", "w1-numb0", false},
		{"w1", "w10", false},
		{"w1", "w12", false},
		{"w1", "w10-numa0", false},
		{"w1", "w1-", false},
		{"w1", "w2", false},
		{"w1", "w", false},
		{"w1", "", false},
		{"w1", "W1", false},
		{"w1-numa0", "w1", false},
		{"w1-numa0", "w1-numa1", false},
		{"w1", "xw1-numa0", false},
	} {
		if got := pki.ProvesWorker(tc.cert, tc.worker); got != tc.want {
			t.Errorf("ProvesWorker(%q, %q) = %v, want %v", tc.cert, tc.worker, got, tc.want)
		}
	}
}

func TestWorkerPolicy(t *testing.T) {
	p := pki.WorkerPolicy("w1-numa0")
	for _, tc := range []struct {
		id pki.Identity
		ok bool
	}{
		{pki.Identity{Role: pki.Worker, ID: "w1"}, true},
		{pki.Identity{Role: pki.Worker, ID: "w1-numa0"}, true},
		{pki.Identity{Role: pki.Worker, ID: "w2"}, false},
		{pki.Identity{Role: pki.Worker, ID: "w1-numa1"}, false},
		{pki.Identity{Role: pki.Worker, ID: "w"}, false},
		{pki.Identity{Role: pki.Node, ID: "w1"}, false},
		{pki.Identity{Role: pki.Scheduler, ID: "w1-numa0"}, false},
		{pki.Identity{Role: pki.Admin, ID: "w1"}, false},
		{pki.Identity{}, false},
	} {
		err := p(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("WorkerPolicy(w1-numa0)(%v) = %v, want ok=%v", tc.id, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "w1-numa0") {
			t.Errorf("refusal %q does not name the worker", err)
		}
	}
}

func TestAnyOf(t *testing.T) {
	p := pki.AnyOf(pki.Scheduler, pki.Admin)
	for _, r := range pki.Roles {
		err := p(pki.Identity{Role: r, ID: "x"})
		want := r == pki.Scheduler || r == pki.Admin
		if (err == nil) != want {
			t.Errorf("AnyOf(scheduler, admin)(%s) = %v", r, err)
		}
		if err != nil && !strings.Contains(err.Error(), string(r)) {
			t.Errorf("refusal %q does not name the role", err)
		}
	}
	none := pki.AnyOf()
	for _, r := range pki.Roles {
		if none(pki.Identity{Role: r, ID: "x"}) == nil {
			t.Errorf("AnyOf()(%s) accepted", r)
		}
	}
	if pki.AnyOf(pki.Worker)(pki.Identity{}) == nil {
		t.Error("AnyOf(worker) accepted the zero identity")
	}
}

func TestExactly(t *testing.T) {
	want := pki.Identity{Role: pki.Node, ID: "node-a"}
	p := pki.Exactly(want)
	if err := p(want); err != nil {
		t.Fatalf("Exactly(%v)(%v) = %v", want, want, err)
	}
	for _, id := range []pki.Identity{
		{Role: pki.Node, ID: "node-b"},
		{Role: pki.Node, ID: "node-a-numa0"},
		{Role: pki.Worker, ID: "node-a"},
		{Role: pki.Admin, ID: "node-a"},
		{},
	} {
		if err := p(id); err == nil {
			t.Errorf("Exactly(%v)(%v) accepted", want, id)
		}
	}
}
