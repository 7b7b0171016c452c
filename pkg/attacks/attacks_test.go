package attacks

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func TestParseLine(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		line    string
		want    Report
		wantErr string
	}{
		{line: "203.0.113.7,2024-05-01T12:00:00Z,login", want: Report{netip.MustParseAddr("203.0.113.7"), at, KindLogin, "n1"}},
		{line: ` "203.0.113.7", 1714564800, LOGIN `, want: Report{netip.MustParseAddr("203.0.113.7"), at, KindLogin, "n1"}},
		{line: "2001:db8::1,1714564800.5,scan", want: Report{netip.MustParseAddr("2001:db8::1"), at.Add(500 * time.Millisecond), KindProbe, "n1"}},
		{line: "::ffff:203.0.113.7,2024-05-01T14:00:00+02:00,ddos", want: Report{netip.MustParseAddr("203.0.113.7"), at, KindDDoS, "n1"}},
		{line: `{"address":"203.0.113.7","time":"2024-05-01T12:00:00Z","kind":"spam","extra":1}`, want: Report{netip.MustParseAddr("203.0.113.7"), at, KindCommentSpam, "n1"}},
		{line: `{"address":"203.0.113.7","time":1714564800,"kind":"form"}`, want: Report{netip.MustParseAddr("203.0.113.7"), at, KindForm, "n1"}},
		{line: `{"address":"203.0.113.7","time":"1714564800","kind":"exploit"}`, want: Report{netip.MustParseAddr("203.0.113.7"), at, KindProbe, "n1"}},

		{line: "203.0.113.7,2024-05-01T12:00:00Z", wantErr: "want 3 CSV fields"},
		{line: "nope,2024-05-01T12:00:00Z,login", wantErr: `address "nope": not a valid IP address`},
		{line: "10.0.0.1,2024-05-01T12:00:00Z,login", wantErr: "not a public unicast address"},
		{line: "127.0.0.1,2024-05-01T12:00:00Z,login", wantErr: "not a public unicast address"},
		{line: "fe80::1%eth0,2024-05-01T12:00:00Z,login", wantErr: "zone"},
		{line: "203.0.113.7,yesterday,login", wantErr: `time "yesterday": want RFC 3339`},
		{line: "203.0.113.7,1714564800000,login", wantErr: "(milliseconds? give seconds)"},
		{line: "203.0.113.7,9000000000,login", wantErr: "in the future"},
		{line: "203.0.113.7,171456480000000000,login", wantErr: "too large for Unix seconds"},
		{line: "203.0.113.7,1990-01-01T00:00:00Z,login", wantErr: "is before 2000-01-01"},
		{line: "203.0.113.7,1714564800.,login", wantErr: "want RFC 3339"},
		{line: "203.0.113.7,-5,login", wantErr: "want RFC 3339"},
		{line: "203.0.113.7,2024-05-01T12:00:00Z,hug", wantErr: `kind "hug" unknown: want one of login,`},
		{line: `{"address":"203.0.113.7","time":"2024-05-01T12:00:00Z"}`, wantErr: `without "kind"`},
		{line: `{"address":"203.0.113.7","kind":"login"}`, wantErr: `without "time"`},
		{line: `{"time":1714564800,"kind":"login"}`, wantErr: `without "address"`},
		{line: `{"address":"203.0.113.7",`, wantErr: "bad JSON"},
		{line: `{"address":7,"time":1,"kind":"login"}`, wantErr: "bad JSON"},
		{line: `"203.0.113.7,2024,login`, wantErr: "bad CSV"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := ParseLine([]byte(tt.line), now, "n1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Key() != tt.want.Key() {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestScanner(t *testing.T) {
	in := "\ufeffaddress,time,kind\r\n" +
		"# a comment\n" +
		"203.0.113.7,1714564800,login\n" +
		"\n" +
		"bad line\n" +
		strings.Repeat("x", MaxLineLen+1) + "\n" +
		`{"address":"2001:db8::7","time":1714564800,"kind":"probe"}` + "\n" +
		"address,time,kind\n" + // a header after reports is a bad line
		"198.51.100.1,1714564800,ddos" // no final newline
	s := NewScanner(strings.NewReader(in), now, "n1")
	type res struct {
		line int
		ok   bool
	}
	var got []res
	for {
		r, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *LineError
		if err != nil && !errors.As(err, &le) {
			t.Fatal(err)
		}
		if le != nil && le.Line != s.Line() {
			t.Fatalf("line error %d, scanner at %d", le.Line, s.Line())
		}
		if err == nil && r.Reporter != "n1" {
			t.Fatalf("reporter %q", r.Reporter)
		}
		got = append(got, res{s.Line(), err == nil})
	}
	want := []res{{3, true}, {5, false}, {6, false}, {7, true}, {8, false}, {9, true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestScannerLongLineAtEOF(t *testing.T) {
	s := NewScanner(strings.NewReader(strings.Repeat("1", 3*MaxLineLen)), now, "n1")
	var le *LineError
	if _, err := s.Next(); !errors.As(err, &le) || le.Line != 1 {
		t.Fatalf("err %v", err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("err %v, want EOF", err)
	}
}

func TestKinds(t *testing.T) {
	for _, k := range Kinds() {
		got, err := ParseKind(strings.ToUpper(k.String()))
		if err != nil || got != k || k.Label() == "" {
			t.Fatalf("%v: %v %v %q", k, got, err, k.Label())
		}
	}
	if len(Kinds()) != int(NumKinds)-1 {
		t.Fatal("Kinds misses some")
	}
	if KindInvalid.Valid() || KindInvalid.Label() != "" {
		t.Fatal("invalid kind is valid")
	}
}

func TestProtoRoundTrip(t *testing.T) {
	r := Report{netip.MustParseAddr("2001:db8::1"), time.Unix(1714564800, 42), KindLogin, "node-1"}
	if err := r.Validate(now); err != nil {
		t.Fatal(err)
	}
	got, err := FromProto(r.Proto())
	if err != nil || got.Key() != r.Key() {
		t.Fatalf("%+v %v", got, err)
	}
	bad := r.Proto()
	bad.Kind = "scan" // an alias is not a wire kind
	if _, err := FromProto(bad); err == nil {
		t.Fatal("alias accepted on the wire")
	}
	bad = r.Proto()
	bad.Reporter = ""
	if _, err := FromProto(bad); err == nil {
		t.Fatal("empty reporter accepted")
	}
	bad = r.Proto()
	bad.Address = []byte{10, 0, 0, 1}
	if _, err := FromProto(bad); err == nil {
		t.Fatal("private address accepted")
	}
	// The future is the sender's business, not a follower's.
	future := r
	future.Time = now.Add(48 * time.Hour)
	if _, err := FromProto(future.Proto()); err != nil {
		t.Fatal(err)
	}
	if err := future.Validate(now); err == nil {
		t.Fatal("future report valid")
	}
}

func TestTable(t *testing.T) {
	tb := NewTable(64) // one address per shard
	a := netip.MustParseAddr("203.0.113.7")
	r := Report{a, time.Unix(1714564800, 0), KindLogin, "n1"}
	if !tb.Add(r) || tb.Add(r) {
		t.Fatal("duplicate counted")
	}
	r2 := r
	r2.Kind = KindProbe
	r2.Time = r.Time.Add(time.Minute)
	tb.Add(r2)
	r3 := r
	r3.Reporter = "n2"
	tb.Add(r3)
	n, last := tb.Attacks(netip.MustParseAddr("::ffff:203.0.113.7"))
	if n != 3 || !last.Equal(r2.Time) {
		t.Fatalf("attacks %d, last %v", n, last)
	}
	c, ok := tb.Counts(a)
	if !ok || c.ByKind[KindLogin] != 2 || c.ByKind[KindProbe] != 1 || c.Total != 3 {
		t.Fatalf("counts %+v", c)
	}
	if n, last := tb.Attacks(netip.MustParseAddr("198.51.100.1")); n != 0 || !last.IsZero() {
		t.Fatal("unknown address has history")
	}
	// Bounded: far more addresses than room.
	for i := range 10_000 {
		tb.Add(Report{netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), time.Unix(1714564800+int64(i), 0), KindDDoS, "n1"})
	}
	if tb.Len() > 64 || tb.Evicted() == 0 {
		t.Fatalf("len %d, evicted %d", tb.Len(), tb.Evicted())
	}
}

func TestTableConcurrent(t *testing.T) {
	tb := NewTable(1 << 12)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 50)})
				if g%2 == 0 {
					tb.Add(Report{a, time.Unix(1714564800+int64(i), 0), KindLogin, fmt.Sprint("n", g)})
				} else {
					tb.Attacks(a)
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for i := range 50 {
		n, _ := tb.Attacks(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
		total += int(n)
	}
	if total != 8000 { // four writers, 2000 reports each
		t.Fatalf("total %d, want 8000", total)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"203.0.113.7,2024-05-01T12:00:00Z,login",
		`{"address":"2001:db8::1","time":1714564800.5,"kind":"probe"}`,
		`"a,b",c,d`, "", "{", "1.2.3.4,1e9,ddos",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseLine(line, now, "n1")
		if err != nil {
			return
		}
		if verr := r.Validate(now); verr != nil {
			t.Fatalf("ParseLine accepted %q as %+v, which Validate refuses: %v", line, r, verr)
		}
		back, perr := FromProto(r.Proto())
		if perr != nil || back.Key() != r.Key() {
			t.Fatalf("wire round trip of %+v: %+v %v", r, back, perr)
		}
	})
}

func FuzzScanner(f *testing.F) {
	f.Add([]byte("address,time,kind\n203.0.113.7,1714564800,login\nbad\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NewScanner(strings.NewReader(string(in)), now, "n1")
		for i := 0; ; i++ {
			_, err := s.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			var le *LineError
			if err != nil && !errors.As(err, &le) {
				t.Fatal(err)
			}
			if i > len(in)+1 {
				t.Fatal("scanner does not end")
			}
		}
	})
}
