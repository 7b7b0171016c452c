package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendJSON appends o as encoding/json would write it (MarshalIndent with
// four spaces when pretty, Marshal otherwise), byte for byte, without
// reflection for the types answers are made of: object, string, the
// integer types, bool and nil. Anything else goes through encoding/json.
// The query path spent half its CPU in reflection and re-indenting.
func appendJSON(b []byte, v any, pretty bool, depth int) ([]byte, error) {
	switch x := v.(type) {
	case object:
		return x.appendTo(b, pretty, depth)
	case string:
		return appendString(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case nil:
		return append(b, "null"...), nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if !pretty {
		return append(b, raw...), nil
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, indentPrefix(depth), "    "); err != nil {
		return nil, err
	}
	return append(b, buf.Bytes()...), nil
}

func indentPrefix(depth int) string {
	const spaces = "                                                                "
	if n := 4 * depth; n <= len(spaces) {
		return spaces[:n]
	}
	return string(bytes.Repeat([]byte(" "), 4*depth))
}

func (o object) appendTo(b []byte, pretty bool, depth int) ([]byte, error) {
	if len(o) == 0 {
		return append(b, "{}"...), nil
	}
	b = append(b, '{')
	var err error
	for i, f := range o {
		if i > 0 {
			b = append(b, ',')
		}
		if pretty {
			b = append(b, '\n')
			b = append(b, indentPrefix(depth+1)...)
		}
		b = appendString(b, f.k)
		b = append(b, ':')
		if pretty {
			b = append(b, ' ')
		}
		switch f.kind {
		case kindString:
			b = appendString(b, f.s)
		case kindASN:
			b = append(b, `"AS`...)
			b = strconv.AppendUint(b, f.n, 10)
			b = append(b, '"')
		case kindPrefix: // its text needs no escaping
			b = append(b, '"')
			b = f.p.AppendTo(b)
			b = append(b, '"')
		default:
			if b, err = appendJSON(b, f.v, pretty, depth+1); err != nil {
				return nil, err
			}
		}
	}
	if pretty {
		b = append(b, '\n')
		b = append(b, indentPrefix(depth)...)
	}
	return append(b, '}'), nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as encoding/json does (HTML-safe escaping of <, >
// and &, \u2028 and \u2029 escaped, invalid UTF-8 as U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
