package dialguard

import "net/netip"

// defaultDeny is the deny-list every Guard applies. Sources: the IANA IPv4
// and IPv6 Special-Purpose Address Registries (RFC 6890 and updates), RFC
// 6598 (shared address space), RFC 9637 (IPv6 documentation), and the
// cloud metadata addresses. IPv4-mapped IPv6 addresses (::ffff:0:0/96) need
// no entry: they are judged as the IPv4 address they carry.
var defaultDeny = []struct{ prefix, reason string }{
	// IPv4.
	{"0.0.0.0/8", "this network, unspecified"},
	{"10.0.0.0/8", "private"},
	{"100.64.0.0/10", "shared address space (CGNAT)"},
	{"127.0.0.0/8", "loopback"},
	{"169.254.0.0/16", "link-local"},
	{"169.254.169.254/32", "cloud metadata"},
	{"172.16.0.0/12", "private"},
	{"192.0.0.0/24", "IETF protocol assignments"},
	{"192.0.2.0/24", "documentation (TEST-NET-1)"},
	{"192.88.99.0/24", "6to4 relay anycast (deprecated)"},
	{"192.168.0.0/16", "private"},
	{"198.18.0.0/15", "benchmarking"},
	{"198.51.100.0/24", "documentation (TEST-NET-2)"},
	{"203.0.113.0/24", "documentation (TEST-NET-3)"},
	{"224.0.0.0/4", "multicast"},
	{"240.0.0.0/4", "reserved"},
	{"255.255.255.255/32", "limited broadcast"},

	// IPv6: everything outside global unicast 2000::/3 (::/3, 4000::/2,
	// 8000::/1), with the well-known parts of it named.
	{"::/3", "reserved (outside 2000::/3)"},
	{"4000::/2", "reserved (outside 2000::/3)"},
	{"8000::/1", "reserved (outside 2000::/3)"},
	{"::/128", "unspecified"},
	{"::1/128", "loopback"},
	{"::/96", "IPv4-compatible (deprecated)"},
	{"64:ff9b:1::/48", "local-use NAT64"},
	{"100::/64", "discard-only"},
	{"fc00::/7", "unique local (ULA)"},
	{"fd00:ec2::254/128", "cloud metadata"},
	{"fe80::/10", "link-local"},
	{"fec0::/10", "site-local (deprecated)"},
	{"ff00::/8", "multicast"},
	// Special-purpose ranges inside 2000::/3.
	{"2001::/23", "IETF protocol assignments (Teredo, ORCHID, benchmarking)"},
	{"2001:db8::/32", "documentation"},
	{"2002::/16", "6to4"},
	{"3fff::/20", "documentation"},
}

// DefaultDeny returns a copy of the deny-list every Guard applies.
func DefaultDeny() []netip.Prefix {
	out := make([]netip.Prefix, len(defaultDeny))
	for i, r := range defaultDeny {
		out[i] = netip.MustParsePrefix(r.prefix)
	}
	return out
}
