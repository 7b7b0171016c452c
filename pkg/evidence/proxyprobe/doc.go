// Package proxyprobe is the open-proxy probe, an evidence plugin: it
// finds HTTP CONNECT, SOCKS4 and SOCKS5 proxies that anyone may use on an
// examined address by completing the real handshake through them, to a
// target the operator controls.
//
// # Off by default
//
// The probe opens connections to the addresses STYX examines, so it exists
// only when an operator asks for it: New refuses a Config whose Enabled is
// false (ErrDisabled), and nothing in STYX builds one otherwise. The
// operator also provides the target (Target, and the Banner it sends) and
// the dialer, whose guard decides which addresses may be dialed
// (pkg/dialguard: private, loopback, link-local, multicast, reserved and
// metadata ranges are always denied unless explicitly allowed; tests allow
// 127.0.0.0/8 and nothing else):
//
//	g, _ := dialguard.New(dialguard.Config{})
//	d, _ := dialguard.NewDialer(dialguard.DialerConfig{Guard: g})
//	probe, err := proxyprobe.New(proxyprobe.Config{
//		Enabled: true,
//		Dialer:  d,
//		Target:  netip.MustParseAddrPort("198.51.100.10:7"), // a host you run
//		Banner:  []byte("styx-probe-target\n"),              // what it sends on connect
//	}, log)
//	runner, err := evidence.NewRunner(evidence.Config{Plugin: probe, ...}, log)
//
// Wrap the probe in an evidence.Runner: the Runner bounds the probes in
// flight, their rate and their duration.
//
// # What it does for one address
//
// Each configured port (DefaultPorts unless set; Parallel ports at once) is
// tried with each protocol in order (DefaultProtocols: HTTP, SOCKS5,
// SOCKS4), one connection per attempt, until one succeeds:
//
//   - HTTP: "CONNECT target HTTP/1.1"; a 2xx status line (RFC 9110 §9.3.6)
//     is a tunnel.
//   - SOCKS5: the no-authentication method negotiation (05 01 00, answer
//     05 00), then CONNECT to the target, answered with reply code 00.
//   - SOCKS4: CONNECT to the target (IPv4 targets only), answered with
//     code 0x5A (request granted).
//
// If Banner is set, the probe then reads it through the tunnel: only a
// proxy that really reached the target passes, not a server that answers
// "200" or "granted" to anything. A port stops being tried once it refuses
// the connection, answers the HTTP request as an HTTP server (a 4xx to
// CONNECT: not a proxy, and not SOCKS either), or stays silent until
// HandshakeTimeout (a SOCKS server closes at once on "CONNECT"; a silent
// port is not tried three times).
//
// Each found proxy is one evidence.Evidence{Source: "proxyprobe", Type:
// "HTTP" | "SOCKS4" | "SOCKS5", Port: port}, in port order: its Type and
// Port are the verdict's type and port fields (evidence.Typed picks the
// first), and its String ("proxyprobe:SOCKS5:1080") goes into the
// verdict's evidence list.
//
// Connections to different hosts cannot be shared, so reuse is of what can
// be: the requests are encoded once in New, read buffers come from a
// sync.Pool, and no port is tried again once its answer says it cannot be
// a proxy. Every read is bounded (response size and deadline), and a
// context that ends stops the attempt in progress at once.
package proxyprobe
