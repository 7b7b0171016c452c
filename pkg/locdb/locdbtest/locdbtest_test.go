package locdbtest

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
)

func TestParseReferenceOutput(t *testing.T) {
	out := `8.8.8.8:
  Network                 : 8.8.8.0/24
  Country                 : United States of America
  Autonomous System       : AS15169 - GOOGLE
  Anycast                 : yes
2.57.171.5:
  Network                 : 2.57.171.0/24
  Country                 : Brazil
  Autonomous System       : AS262287
  Anonymous Proxy         : yes
2001:db8::1:
  Network                 : 2001:db8::/32
  Autonomous System       : AS64500 - A - B
  Satellite Provider      : yes
  Hostile Network safe to drop: yes
`
	got, err := ParseReferenceOutput([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]RefAnswer{
		"8.8.8.8": {Network: netip.MustParsePrefix("8.8.8.0/24"), Country: "United States of America",
			ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast},
		"2.57.171.5": {Network: netip.MustParsePrefix("2.57.171.0/24"), Country: "Brazil",
			ASN: 262287, Flags: locdb.FlagAnonymousProxy},
		"2001:db8::1": {Network: netip.MustParsePrefix("2001:db8::/32"), ASN: 64500, ASName: "A - B",
			Flags: locdb.FlagSatelliteProvider | locdb.FlagDrop},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d answers: %+v", len(got), got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	for _, bad := range []string{"garbage\n", "  Network : 1.2.3.0/24\n", "a:\n  Weird : x\n", "a:\n  Network : nope\n"} {
		if _, err := ParseReferenceOutput([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestMatches(t *testing.T) {
	r := RefAnswer{Network: netip.MustParsePrefix("8.8.8.0/24"), Country: "United States of America",
		ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast}
	n := locdb.Network{Prefix: netip.MustParsePrefix("8.8.8.0/24"), Country: "US", CountryName: "United States of America",
		ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast}
	if d := r.Matches(n); d != "" {
		t.Errorf("equal answers differ: %s", d)
	}
	n.Flags |= locdb.FlagDrop
	n.ASName = "OTHER"
	if d := r.Matches(n); !strings.Contains(d, "flags") || !strings.Contains(d, "AS") {
		t.Errorf("differences not reported: %q", d)
	}
	// A code without a country record prints as the code.
	r.Country, n = "XK", locdb.Network{Prefix: r.Network, Country: "XK", ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast}
	if d := r.Matches(n); d != "" {
		t.Errorf("code-only country: %s", d)
	}
}

func TestWriterErrors(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		db   Database
	}{
		{"duplicate network", Database{Networks: []Network{{Prefix: p("1.2.3.0/24")}, {Prefix: p("1.2.3.0/24")}}}},
		{"duplicate via IPv4-mapped form", Database{Networks: []Network{{Prefix: p("1.2.3.0/24")}, {Prefix: p("::ffff:1.2.3.0/120")}}}},
		{"invalid prefix", Database{Networks: []Network{{}}}},
		{"three-letter country", Database{Networks: []Network{{Prefix: p("1.2.3.0/24"), Country: "USA"}}}},
		{"country without code", Database{Countries: []Country{{Name: "Nowhere"}}}},
		{"duplicate country", Database{Countries: []Country{{Code: "US"}, {Code: "US"}}}},
		{"duplicate AS", Database{ASes: []AS{{Number: 1}, {Number: 1}}}},
		{"NUL in a string", Database{Vendor: "a\x00b"}},
		{"bad continent", Database{Countries: []Country{{Code: "US", Continent: "N"}}}},
	}
	for _, tt := range tests {
		if _, err := tt.db.Bytes(); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
