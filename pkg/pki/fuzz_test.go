package pki

import (
	"net/url"
	"testing"
)

// FuzzParseURI: an identity URI parses to one identity whose URI is the
// same text, or is refused; nothing panics.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"spiffe://styx/worker/w1", "spiffe://styx/node/n-1.a:b", "spiffe://styx/admin/ops",
		"spiffe://styx/worker/w1/x", "spiffe://other/worker/w1", "spiffe://styx:1/worker/w1",
		"spiffe://styx/worker/w%31", "spiffe://styx/worker/w1?", "https://styx/worker/w1", "spiffe://styx//",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseURI(u)
		if err != nil {
			return
		}
		// url.Parse lower-cases the scheme and drops an empty "#"; a
		// certificate's URI SAN reaches ParseURI in that parsed form.
		if got := id.URI().String(); got != u.String() {
			t.Fatalf("%q parsed as %s, whose URI is %q", s, id, got)
		}
		again, err := ParseURI(id.URI())
		if err != nil || again != id {
			t.Fatalf("%s does not round-trip: %v %v", id, again, err)
		}
	})
}
