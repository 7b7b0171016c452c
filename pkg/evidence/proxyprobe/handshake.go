package proxyprobe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"net/netip"
	"os"
)

// outcome is what one attempt on one port learned.
type outcome uint8

const (
	// outFailed: no tunnel; the port may still speak another protocol.
	outFailed outcome = iota + 1
	// outOpen: the proxy tunneled to the target.
	outOpen
	// outClosed: the connection could not be made.
	outClosed
	// outHTTP: the port answered as an HTTP server without a tunnel: it
	// is not a proxy of any kind the probe knows.
	outHTTP
	// outSilent: the port sent nothing before the deadline.
	outSilent
)

var errDeadline = os.ErrDeadlineExceeded

// maxReply is the longest SOCKS reply (SOCKS5 with a 255-byte domain name)
// and the scratch buffer's size; MaxBanner fits in it.
const maxReply = 4 + 1 + 255 + 2

// requests are encoded once per Probe.
type requests struct {
	http           []byte
	socks5Greeting []byte
	socks5Connect  []byte
	socks4Connect  []byte
}

func encodeRequests(target netip.AddrPort) requests {
	hostport := target.String()
	r := requests{
		http: []byte("CONNECT " + hostport + " HTTP/1.1\r\nHost: " + hostport +
			"\r\nUser-Agent: styx-proxyprobe\r\n\r\n"),
		// Version 5, one method offered: 0x00 (no authentication).
		socks5Greeting: []byte{5, 1, 0},
	}
	// SOCKS5 CONNECT: VER CMD RSV ATYP DST.ADDR DST.PORT.
	a := target.Addr()
	if a.Is4() {
		ip := a.As4()
		r.socks5Connect = append([]byte{5, 1, 0, 1}, ip[:]...)
	} else {
		ip := a.As16()
		r.socks5Connect = append([]byte{5, 1, 0, 4}, ip[:]...)
	}
	r.socks5Connect = binary.BigEndian.AppendUint16(r.socks5Connect, target.Port())
	// SOCKS4 CONNECT: VN=4 CD=1 DSTPORT DSTIP USERID NUL.
	if a.Is4() {
		ip := a.As4()
		r.socks4Connect = binary.BigEndian.AppendUint16([]byte{4, 1}, target.Port())
		r.socks4Connect = append(r.socks4Connect, ip[:]...)
		r.socks4Connect = append(append(r.socks4Connect, socks4UserID...), 0)
	}
	return r
}

// connectRequest is what http.ReadResponse is told the response answers
// (it only reads the method); shared and never modified.
var connectRequest = &http.Request{Method: http.MethodConnect}

// handshakeHTTP sends an HTTP CONNECT request and reads the answer.
func handshakeHTTP(w io.Writer, br *bufio.Reader, scratch, req, banner []byte) outcome {
	if _, err := w.Write(req); err != nil {
		return outFailed
	}
	if out, ok := firstByte(br); !ok {
		return out
	}
	resp, err := http.ReadResponse(br, connectRequest)
	if err != nil {
		return outFailed
	}
	// The body is not read or closed: closing would drain it, and the
	// connection is dropped anyway.
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return outHTTP
	}
	return checkBanner(br, scratch, banner)
}

// handshakeSOCKS5 negotiates "no authentication", then asks for a CONNECT.
func handshakeSOCKS5(w io.Writer, br *bufio.Reader, scratch, greeting, connect, banner []byte) outcome {
	if _, err := w.Write(greeting); err != nil {
		return outFailed
	}
	if out, ok := firstByte(br); !ok {
		return out
	}
	// VER METHOD: 05 00 accepts no authentication.
	if _, err := io.ReadFull(br, scratch[:2]); err != nil || scratch[0] != 5 || scratch[1] != 0 {
		return outFailed
	}
	if _, err := w.Write(connect); err != nil {
		return outFailed
	}
	// VER REP RSV ATYP BND.ADDR BND.PORT; REP 00 is success.
	if _, err := io.ReadFull(br, scratch[:4]); err != nil || scratch[0] != 5 || scratch[1] != 0 || scratch[2] != 0 {
		return outFailed
	}
	var n int
	switch scratch[3] {
	case 1:
		n = 4
	case 4:
		n = 16
	case 3:
		l, err := br.ReadByte()
		if err != nil {
			return outFailed
		}
		n = int(l)
	default:
		return outFailed
	}
	if _, err := io.ReadFull(br, scratch[:n+2]); err != nil {
		return outFailed
	}
	return checkBanner(br, scratch, banner)
}

// handshakeSOCKS4 asks for a CONNECT.
func handshakeSOCKS4(w io.Writer, br *bufio.Reader, scratch, connect, banner []byte) outcome {
	if _, err := w.Write(connect); err != nil {
		return outFailed
	}
	if out, ok := firstByte(br); !ok {
		return out
	}
	// VN CD DSTPORT DSTIP: VN 0, CD 0x5A is "request granted".
	if _, err := io.ReadFull(br, scratch[:8]); err != nil || scratch[0] != 0 || scratch[1] != 0x5A {
		return outFailed
	}
	return checkBanner(br, scratch, banner)
}

// firstByte waits for the peer's first byte. It reports outSilent if the
// deadline passed with nothing received, and outFailed if the connection
// ended.
func firstByte(br *bufio.Reader) (outcome, bool) {
	if _, err := br.Peek(1); err != nil {
		if isTimeout(err) {
			return outSilent, false
		}
		return outFailed, false
	}
	return 0, true
}

// checkBanner reads the banner through the tunnel, if one is expected.
func checkBanner(br *bufio.Reader, scratch, banner []byte) outcome {
	if len(banner) == 0 {
		return outOpen
	}
	got := scratch[:len(banner)]
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, banner) {
		return outFailed
	}
	return outOpen
}
