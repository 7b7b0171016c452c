package proxyprobe

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"testing"
)

var (
	testTarget = netip.MustParseAddrPort("127.0.0.2:4242")
	testBanner = []byte("BANNER\n")
	testReqs   = encodeRequests(testTarget)
)

func TestEncodeRequests(t *testing.T) {
	r := encodeRequests(testTarget)
	if got, want := string(r.http), "CONNECT 127.0.0.2:4242 HTTP/1.1\r\nHost: 127.0.0.2:4242\r\nUser-Agent: styx-proxyprobe\r\n\r\n"; got != want {
		t.Errorf("http request %q, want %q", got, want)
	}
	if got, want := r.socks5Greeting, []byte{5, 1, 0}; !bytes.Equal(got, want) {
		t.Errorf("socks5 greeting % x, want % x", got, want)
	}
	if got, want := r.socks5Connect, []byte{5, 1, 0, 1, 127, 0, 0, 2, 0x10, 0x92}; !bytes.Equal(got, want) {
		t.Errorf("socks5 connect % x, want % x", got, want)
	}
	if got, want := r.socks4Connect, []byte{4, 1, 0x10, 0x92, 127, 0, 0, 2, 's', 't', 'y', 'x', 0}; !bytes.Equal(got, want) {
		t.Errorf("socks4 connect % x, want % x", got, want)
	}
	r6 := encodeRequests(netip.MustParseAddrPort("[2001:db8::1]:80"))
	if got := string(r6.http[:len("CONNECT [2001:db8::1]:80 ")]); got != "CONNECT [2001:db8::1]:80 " {
		t.Errorf("IPv6 http request %q", r6.http)
	}
	if len(r6.socks5Connect) != 4+16+2 || r6.socks5Connect[3] != 4 || r6.socks4Connect != nil {
		t.Errorf("IPv6 socks requests % x / % x", r6.socks5Connect, r6.socks4Connect)
	}
}

// run plays one handshake against canned server bytes and returns the
// outcome and what the probe wrote.
func run(proto Protocol, server []byte, banner []byte) (outcome, []byte) {
	var sent bytes.Buffer
	br := bufio.NewReader(bytes.NewReader(server))
	var scratch [maxReply]byte
	switch proto {
	case HTTP:
		return handshakeHTTP(&sent, br, scratch[:], testReqs.http, banner), sent.Bytes()
	case SOCKS5:
		return handshakeSOCKS5(&sent, br, scratch[:], testReqs.socks5Greeting, testReqs.socks5Connect, banner), sent.Bytes()
	default:
		return handshakeSOCKS4(&sent, br, scratch[:], testReqs.socks4Connect, banner), sent.Bytes()
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestHandshakes(t *testing.T) {
	b := testBanner
	socks5OK := []byte{5, 0}
	tests := []struct {
		name   string
		proto  Protocol
		server []byte
		banner []byte
		want   outcome
	}{
		{"http 200", HTTP, cat([]byte("HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n"), b), b, outOpen},
		{"http 200 no banner expected", HTTP, []byte("HTTP/1.1 200 OK\r\n\r\n"), nil, outOpen},
		{"http 204", HTTP, cat([]byte("HTTP/1.1 204 No Content\r\n\r\n"), b), b, outOpen},
		{"http 200 wrong banner", HTTP, []byte("HTTP/1.1 200 OK\r\n\r\nBANNEX\n"), b, outFailed},
		{"http 200 short banner", HTTP, []byte("HTTP/1.1 200 OK\r\n\r\nBAN"), b, outFailed},
		{"http 404", HTTP, []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"), b, outHTTP},
		{"http 407", HTTP, []byte("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"), b, outHTTP},
		{"http 400 closing", HTTP, []byte("HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"), b, outHTTP},
		{"http garbage", HTTP, []byte("\x05\x00garbage"), b, outFailed},
		{"http eof", HTTP, nil, b, outFailed},
		{"http half status", HTTP, []byte("HTTP/1.1 2"), b, outFailed},
		{"socks5 ipv4", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80}, b), b, outOpen},
		{"socks5 ipv6", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 4}, make([]byte, 16), []byte{0, 80}, b), b, outOpen},
		{"socks5 domain", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 3, 9}, []byte("localhost"), []byte{0, 80}, b), b, outOpen},
		{"socks5 no banner expected", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80}), nil, outOpen},
		{"socks5 auth required", SOCKS5, []byte{5, 0xFF}, b, outFailed},
		{"socks5 user/pass", SOCKS5, []byte{5, 2}, b, outFailed},
		{"socks5 refused", SOCKS5, cat(socks5OK, []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}), b, outFailed},
		{"socks5 bad atyp", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 7, 0, 0, 0, 0, 0, 0}, b), b, outFailed},
		{"socks5 truncated reply", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 1, 127, 0}), b, outFailed},
		{"socks5 wrong version", SOCKS5, []byte{4, 0}, b, outFailed},
		{"socks5 wrong banner", SOCKS5, cat(socks5OK, []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80}, []byte("HONEYPOT")), b, outFailed},
		{"socks4 granted", SOCKS4, cat([]byte{0, 0x5A, 0, 80, 127, 0, 0, 1}, b), b, outOpen},
		{"socks4 no banner expected", SOCKS4, []byte{0, 0x5A, 0, 0, 0, 0, 0, 0}, nil, outOpen},
		{"socks4 rejected", SOCKS4, []byte{0, 0x5B, 0, 0, 0, 0, 0, 0}, b, outFailed},
		{"socks4 wrong version", SOCKS4, cat([]byte{4, 0x5A, 0, 80, 127, 0, 0, 1}, b), b, outFailed},
		{"socks4 truncated", SOCKS4, []byte{0, 0x5A, 0}, b, outFailed},
		{"socks4 wrong banner", SOCKS4, cat([]byte{0, 0x5A, 0, 80, 127, 0, 0, 1}, []byte("nope!!!")), b, outFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, sent := run(tc.proto, tc.server, tc.banner)
			if got != tc.want {
				t.Fatalf("outcome %d, want %d", got, tc.want)
			}
			if len(sent) == 0 {
				t.Fatal("nothing sent")
			}
		})
	}
}

// failWriter fails every write, like a connection reset.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestHandshakeWriteFails(t *testing.T) {
	var scratch [maxReply]byte
	br := bufio.NewReader(bytes.NewReader([]byte("HTTP/1.1 200 OK\r\n\r\n")))
	if got := handshakeHTTP(failWriter{}, br, scratch[:], testReqs.http, nil); got != outFailed {
		t.Errorf("http: %d", got)
	}
	if got := handshakeSOCKS5(failWriter{}, br, scratch[:], testReqs.socks5Greeting, testReqs.socks5Connect, nil); got != outFailed {
		t.Errorf("socks5: %d", got)
	}
	if got := handshakeSOCKS4(failWriter{}, br, scratch[:], testReqs.socks4Connect, nil); got != outFailed {
		t.Errorf("socks4: %d", got)
	}
}

// FuzzHandshakes feeds arbitrary server bytes to every handshake (the
// probe's decoders of outside input): none may panic, read past its
// bounds, or report a tunnel without the protocol's success reply followed
// by the banner.
func FuzzHandshakes(f *testing.F) {
	b := testBanner
	f.Add(cat([]byte("HTTP/1.0 200 Connection established\r\n\r\n"), b))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add(cat([]byte{5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80}, b))
	f.Add(cat([]byte{5, 0, 5, 0, 0, 3, 255}, bytes.Repeat([]byte{'a'}, 255), []byte{0, 80}, b))
	f.Add(cat([]byte{0, 0x5A, 0, 80, 127, 0, 0, 1}, b))
	f.Add([]byte{5, 0xFF})
	f.Fuzz(func(t *testing.T, server []byte) {
		if got, _ := run(HTTP, server, b); got == outOpen {
			if !bytes.HasPrefix(server, []byte("HTTP/")) || !bytes.Contains(server, b) {
				t.Fatalf("HTTP tunnel reported on %q", server)
			}
		}
		if got, _ := run(SOCKS5, server, b); got == outOpen {
			if len(server) < 2+4+2+len(b) || server[0] != 5 || server[1] != 0 || server[2] != 5 || server[3] != 0 || server[4] != 0 || !bytes.Contains(server[6:], b) {
				t.Fatalf("SOCKS5 tunnel reported on % x", server)
			}
		}
		if got, _ := run(SOCKS4, server, b); got == outOpen {
			if len(server) < 8+len(b) || server[0] != 0 || server[1] != 0x5A || !bytes.Equal(server[8:8+len(b)], b) {
				t.Fatalf("SOCKS4 tunnel reported on % x", server)
			}
		}
		// Without a banner the replies alone decide; still no panic.
		run(HTTP, server, nil)
		run(SOCKS5, server, nil)
		run(SOCKS4, server, nil)
	})
}
