// Package labels reads labelled address lists: one "address-or-prefix,label"
// per line, for styx-trainer's train --labels and eval --labels.
//
//	# comments and blank lines are skipped; a header line is allowed
//	address,label
//	2.57.171.5,anonymiser
//	203.0.113.0/24,hostile
//	8.8.8.8,clean
//
// Labels: anonymiser (also anonymizer, anon, proxy, vpn), hostile (also
// drop), clean (also benign, none, 0).
package labels

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Label is what a line says about its address.
type Label uint8

// The labels.
const (
	Clean Label = iota
	Anonymiser
	Hostile
)

func (l Label) String() string {
	switch l {
	case Anonymiser:
		return "anonymiser"
	case Hostile:
		return "hostile"
	}
	return "clean"
}

var names = map[string]Label{
	"anonymiser": Anonymiser, "anonymizer": Anonymiser, "anon": Anonymiser, "proxy": Anonymiser, "vpn": Anonymiser,
	"hostile": Hostile, "drop": Hostile,
	"clean": Clean, "benign": Clean, "none": Clean, "0": Clean,
}

// Entry is one labelled line.
type Entry struct {
	Line   int
	Prefix netip.Prefix // an address is a /32 or /128
	Label  Label
}

// Addr is the address the entry's features are computed for: the
// prefix's first address.
func (e Entry) Addr() netip.Addr { return e.Prefix.Addr() }

// maxReported bounds the bad lines an error lists.
const maxReported = 20

// Error lists the bad lines of a file.
type Error struct {
	Name  string
	Lines []LineError
	More  int // bad lines beyond those listed
}

// LineError is one bad line.
type LineError struct {
	Line   int
	Text   string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	n := len(e.Lines) + e.More
	fmt.Fprintf(&b, "%s: %d bad line", e.Name, n)
	if n != 1 {
		b.WriteString("s")
	}
	b.WriteString(" (want \"address-or-prefix,label\", label one of anonymiser, hostile, clean):")
	for _, l := range e.Lines {
		fmt.Fprintf(&b, "\n  %s:%d: %s: %q", e.Name, l.Line, l.Reason, l.Text)
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "\n  ... and %d more", e.More)
	}
	return b.String()
}

// Parse reads every line of r (named name in errors). It returns the good
// entries and, if any line is bad, an *Error listing the bad ones, so the
// caller can refuse the file or go on without them.
func Parse(r io.Reader, name string) ([]Entry, error) {
	var out []Entry
	bad := &Error{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line, content := 0, 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		content++
		e, err := parseLine(text)
		if err != nil {
			if content == 1 && isHeader(text) {
				continue
			}
			if len(bad.Lines) < maxReported {
				bad.Lines = append(bad.Lines, LineError{Line: line, Text: clip(text), Reason: err.Error()})
			} else {
				bad.More++
			}
			continue
		}
		e.Line = line
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%s: line %d: %w", name, line+1, err)
	}
	if len(bad.Lines) > 0 {
		return out, bad
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no labelled lines", name)
	}
	return out, nil
}

// ReadFile parses the file at path.
func ReadFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

func parseLine(text string) (Entry, error) {
	fields := strings.Split(text, ",")
	if len(fields) != 2 {
		return Entry{}, fmt.Errorf("%d fields, want 2", len(fields))
	}
	a, l := strings.TrimSpace(fields[0]), strings.ToLower(strings.TrimSpace(fields[1]))
	var e Entry
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return e, errors.New("not an address or prefix")
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		e.Prefix = p.Masked()
	} else {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return e, errors.New("not an address or prefix")
		}
		if ip.Zone() != "" {
			return e, errors.New("address with a zone")
		}
		ip = ip.Unmap()
		e.Prefix = netip.PrefixFrom(ip, ip.BitLen())
	}
	lab, ok := names[l]
	if !ok {
		return e, fmt.Errorf("unknown label %q", l)
	}
	e.Label = lab
	return e, nil
}

func isHeader(text string) bool {
	f, _, _ := strings.Cut(strings.ToLower(text), ",")
	switch strings.TrimSpace(f) {
	case "address", "prefix", "ip", "network", "address-or-prefix", "addr":
		return true
	}
	return false
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
