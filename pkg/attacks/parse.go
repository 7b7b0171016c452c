package attacks

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxLineLen is the longest report line accepted, in bytes.
const MaxLineLen = 1024

// LineError is a line that is not a valid report.
type LineError struct {
	Line int // 1-based
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Scanner reads attack reports, one per line. A line is either CSV
//
//	address,time,kind
//
// or a JSON object
//
//	{"address": "203.0.113.7", "time": "2024-05-01T12:00:00Z", "kind": "login"}
//
// (other JSON fields are ignored). time is RFC 3339 or Unix seconds (a
// decimal fraction allowed; in JSON a number or a string). kind is a word
// ParseKind accepts. Blank lines and lines starting with '#' are skipped,
// and so is a CSV header line ("address,time,kind") before the first
// report. Every report gets the scanner's reporter.
type Scanner struct {
	r        *bufio.Reader
	now      time.Time
	reporter string
	line     int
	started  bool // a report line was seen (a header may no longer come)
	done     bool
}

// NewScanner reads reports from r. now bounds the times accepted (see
// CheckTime); reporter is set on every report.
func NewScanner(r io.Reader, now time.Time, reporter string) *Scanner {
	return &Scanner{r: bufio.NewReaderSize(r, 64<<10), now: now, reporter: reporter}
}

// Line is the number of the line the last Next call returned.
func (s *Scanner) Line() int { return s.line }

// Next returns the next report. A bad line returns a *LineError and the
// scanner goes on with the next line; io.EOF ends the input; any other
// error is a read error, after which the scanner stops.
func (s *Scanner) Next() (Report, error) {
	for {
		if s.done {
			return Report{}, io.EOF
		}
		line, tooLong, err := s.readLine()
		if err != nil && !errors.Is(err, io.EOF) {
			s.done = true
			return Report{}, fmt.Errorf("read line %d: %w", s.line+1, err)
		}
		if errors.Is(err, io.EOF) {
			s.done = true
			if len(line) == 0 && !tooLong {
				return Report{}, io.EOF
			}
		}
		s.line++
		if tooLong {
			return Report{}, &LineError{Line: s.line, Msg: fmt.Sprintf("line longer than %d bytes", MaxLineLen)}
		}
		if s.line == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff")) // a byte order mark
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if !s.started && isHeader(line) {
			s.started = true
			continue
		}
		s.started = true
		r, perr := ParseLine(line, s.now, s.reporter)
		if perr != nil {
			return Report{}, &LineError{Line: s.line, Msg: perr.Error()}
		}
		return r, nil
	}
}

// readLine returns the next line without its end; a line longer than
// MaxLineLen is consumed and reported with tooLong.
func (s *Scanner) readLine() (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if len(buf)+len(frag) > MaxLineLen+2 { // +2: the line end
			tooLong = true
		} else {
			buf = append(buf, frag...)
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, true, nil
			}
			return bytes.TrimRight(buf, "\r\n"), false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			if tooLong {
				return nil, true, err
			}
			return bytes.TrimRight(buf, "\r\n"), false, err
		}
	}
}

// isHeader reports whether a line is a CSV header naming the columns.
func isHeader(line []byte) bool {
	f, _, _ := bytes.Cut(line, []byte(","))
	f = bytes.Trim(bytes.TrimSpace(f), `"`)
	switch strings.ToLower(string(f)) {
	case "address", "ip", "addr":
		return true
	}
	return false
}

// jsonReport is the JSON form of a report line.
type jsonReport struct {
	Address *string         `json:"address"`
	Time    json.RawMessage `json:"time"`
	Kind    *string         `json:"kind"`
}

// ParseLine parses one report line (CSV or JSON, see Scanner) without its
// line end.
func ParseLine(line []byte, now time.Time, reporter string) (Report, error) {
	line = bytes.TrimSpace(line)
	var addr, ts, kind string
	if len(line) > 0 && line[0] == '{' {
		var j jsonReport
		if err := json.Unmarshal(line, &j); err != nil {
			return Report{}, fmt.Errorf("bad JSON: %v", jsonError(err))
		}
		switch {
		case j.Address == nil:
			return Report{}, errors.New(`JSON report without "address"`)
		case len(j.Time) == 0 || string(j.Time) == "null":
			return Report{}, errors.New(`JSON report without "time"`)
		case j.Kind == nil:
			return Report{}, errors.New(`JSON report without "kind"`)
		}
		addr, kind = *j.Address, *j.Kind
		if j.Time[0] == '"' {
			if err := json.Unmarshal(j.Time, &ts); err != nil {
				return Report{}, fmt.Errorf("time: %v", jsonError(err))
			}
		} else {
			ts = string(j.Time)
		}
	} else {
		cr := csv.NewReader(bytes.NewReader(line))
		cr.FieldsPerRecord = -1
		cr.TrimLeadingSpace = true
		rec, err := cr.Read()
		if err != nil {
			return Report{}, fmt.Errorf("bad CSV: %v", csvError(err))
		}
		if len(rec) != 3 {
			return Report{}, fmt.Errorf("want 3 CSV fields address,time,kind, got %d", len(rec))
		}
		addr, ts, kind = rec[0], rec[1], rec[2]
	}

	a, err := netip.ParseAddr(strings.TrimSpace(addr))
	if err != nil {
		return Report{}, fmt.Errorf("address %s: not a valid IP address", quoteShort(addr))
	}
	if a, err = CheckAddr(a); err != nil {
		return Report{}, fmt.Errorf("address %s: %w", quoteShort(addr), err)
	}
	t, err := ParseTime(ts)
	if err != nil {
		return Report{}, err
	}
	if err := CheckTime(t, now); err != nil {
		if isUnix(ts) && t.After(now) {
			return Report{}, fmt.Errorf("%w (Unix milliseconds? give seconds)", err)
		}
		return Report{}, err
	}
	k, err := ParseKind(kind)
	if err != nil {
		return Report{}, err
	}
	return Report{Addr: a, Time: t, Kind: k, Reporter: reporter}, nil
}

// ParseTime parses RFC 3339 ("2024-05-01T12:00:00Z", fractions allowed) or
// Unix seconds ("1714564800", "1714564800.25").
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time")
	}
	if isUnix(s) {
		whole, frac, hasFrac := strings.Cut(s, ".")
		sec, err := strconv.ParseInt(whole, 10, 64)
		if err == nil && sec >= math.MaxInt64/1_000_000_000 {
			return time.Time{}, fmt.Errorf("time %s: too large for Unix seconds (milliseconds? give seconds)", quoteShort(s))
		}
		if err == nil {
			var ns int64
			if hasFrac {
				if frac == "" || len(frac) > 9 || strings.Trim(frac, "0123456789") != "" {
					err = errors.New("bad fraction")
				} else {
					ns, _ = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
				}
			}
			if err == nil {
				return time.Unix(sec, ns), nil
			}
		}
	} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("time %s: want RFC 3339 (2024-05-01T12:00:00Z) or Unix seconds", quoteShort(s))
}

// isUnix reports whether a time is spelt as Unix seconds (not RFC 3339).
func isUnix(s string) bool {
	s = strings.TrimSpace(s)
	return s != "" && s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, "-:T")
}

func quoteShort(s string) string {
	if len(s) > 64 {
		s = strings.ToValidUTF8(s[:64], "") + "..."
	}
	return strconv.Quote(s)
}

// jsonError shortens encoding/json's messages.
func jsonError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

func csvError(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
