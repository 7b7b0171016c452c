package api

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
)

// TestAppendJSONMatchesEncodingJSON checks the writer against
// encoding/json on random answers, compact and indented.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "ok", "AT&T <Inc>", "quote\" back\\slash", "tab\tnl\nctl\x01", "é ü 中文", "bad\xffutf8", "line\u2028sep\u2029", "Zwiebelfreunde e.V."}
	var gen func(depth int) object
	gen = func(depth int) object {
		n := rng.IntN(5)
		o := object{}
		for range n {
			k := strs[rng.IntN(len(strs))]
			var v any
			switch r := rng.IntN(9); {
			case r == 0 && depth < 3:
				v = gen(depth + 1)
			case r == 1:
				v = rng.Int()
			case r == 2:
				v = uint32(rng.Uint32())
			case r == 3:
				v = rng.Uint64()
			case r == 4:
				v = rng.IntN(2) == 0
			case r == 5:
				v = nil
			case r == 6:
				v = []string{strs[rng.IntN(len(strs))], "x"} // through encoding/json
			case r == 7:
				v = map[string]any{"Total": 3, "Login Attempt": 2, "nested": object{fv("a", "<b>")}}
			default:
				v = strs[rng.IntN(len(strs))]
			}
			o = append(o, fv(k, v))
		}
		return o
	}
	for i := range 2000 {
		o := gen(0)
		for _, pretty := range []bool{false, true} {
			got, err := o.appendTo(nil, pretty, 0)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			if pretty {
				want, err = json.MarshalIndent(o, "", "    ")
			} else {
				want, err = json.Marshal(o)
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("case %d pretty=%v:\n got %s\nwant %s", i, pretty, got, want)
			}
		}
	}
}

// TestAppendStringMatchesEncodingJSON checks string escaping on its own:
// the object test above goes through MarshalJSON, which uses it.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []string{"", "AT&T <Inc>", "q\"b\\", "\x00\x1f\x7f", "é中\u2028\u2029", "\xff\xfe", "a\xc3"}
	for range 5000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s want %s", s, got, want)
		}
	}
}

// TestTypedFieldsMatchPlain checks the typed slots (strField, asnField,
// prefixField) against the same values as plain strings, compact and
// indented.
func TestTypedFieldsMatchPlain(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	strs := []string{"", "ok", "AT&T <Inc>", "quote\" back\\slash", "bad\xffutf8", "line\u2028sep", "Zwiebelfreunde e.V."}
	prefixes := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/48"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::ffff:198.51.100.0/120"),
	}
	for i := range 2000 {
		var typed, plain object
		for range rng.IntN(8) {
			k := strs[rng.IntN(len(strs))]
			switch rng.IntN(4) {
			case 0:
				s := strs[rng.IntN(len(strs))]
				typed, plain = append(typed, strField(k, s)), append(plain, fv(k, s))
			case 1:
				n := rng.Uint32()
				typed, plain = append(typed, asnField(k, n)), append(plain, fv(k, "AS"+strconv.FormatUint(uint64(n), 10)))
			case 2:
				p := prefixes[rng.IntN(len(prefixes))]
				typed, plain = append(typed, prefixField(k, p)), append(plain, fv(k, p.String()))
			default:
				n := rng.Int()
				typed, plain = append(typed, fv(k, n)), append(plain, fv(k, n))
			}
		}
		for _, pretty := range []bool{false, true} {
			got, err := typed.appendTo(nil, pretty, 1)
			if err != nil {
				t.Fatal(err)
			}
			want, err := plain.appendTo(nil, pretty, 1)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("case %d pretty=%v:\n got %s\nwant %s", i, pretty, got, want)
			}
		}
	}
}
