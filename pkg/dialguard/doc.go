// Package dialguard decides which addresses STYX may open connections to,
// and dials only those. Every connection an evidence plugin opens to an
// examined address (the open-proxy probe first) goes through it.
//
// A Guard holds a deny-list and an optional allow-list of prefixes and
// judges an address after resolution:
//
//   - IPv4-mapped IPv6 addresses (::ffff:10.0.0.1) are judged as the IPv4
//     address they carry; zones are ignored.
//   - The longest matching prefix of the two lists decides; an allow
//     prefix wins a tie with a deny prefix of the same length. Allowing
//     127.0.0.0/8 thus opens loopback, while allowing 169.254.0.0/16
//     still leaves the metadata address 169.254.169.254/32 denied.
//   - A non-empty allow-list is exclusive: an address it does not cover
//     is denied. An empty allow-list permits every address not denied.
//   - The deny-list is always DefaultDeny (private, loopback, link-local,
//     multicast, reserved and unspecified, CGNAT 100.64.0.0/10, cloud
//     metadata, documentation and benchmarking ranges, IPv6 ULA,
//     site-local, 6to4, Teredo, and everything outside 2000::/3) plus
//     Config.Deny. The defaults can only be opened by an explicit allow
//     prefix, never removed.
//   - An address in the NAT64 well-known prefix 64:ff9b::/96 (denied by
//     default; an operator may allow it) must pass twice: as itself, and
//     as the IPv4 address it embeds, which the deny-list judges (the
//     allow-list may open it, but need not cover it).
//
// A Dialer resolves a host name itself, judges every resolved address,
// and dials only permitted ones, by IP literal, so a second resolution
// cannot swap the address (DNS rebinding). Its default underlying
// net.Dialer also runs Guard.Control, which judges the address the socket
// is about to connect to, after resolution and before connect(2): the
// last line, which holds even for code that builds its own net.Dialer:
//
//	g, _ := dialguard.New(dialguard.Config{})           // production: defaults
//	d, _ := dialguard.NewDialer(dialguard.DialerConfig{Guard: g})
//	conn, err := d.DialContext(ctx, "tcp", "203.0.113.7:1080")
//	// errors.Is(err, dialguard.ErrDenied): documentation range
//
// Tests allow loopback explicitly, and nothing else:
//
//	g, _ := dialguard.New(dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
package dialguard
