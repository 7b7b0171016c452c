package dialguard

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrDenied is matched (errors.Is) by every refusal of the guard.
var ErrDenied = errors.New("address denied by the dial guard")

// DeniedError says which address was refused and why.
type DeniedError struct {
	// Addr is the address judged (unmapped, without zone).
	Addr netip.Addr
	// Prefix is the deny prefix that matched; invalid when the address was
	// refused for another reason (outside the allow-list, not an address).
	Prefix netip.Prefix
	// Reason names the range, e.g. "private" or "not in the allow-list".
	Reason string
}

func (e *DeniedError) Error() string {
	if !e.Addr.IsValid() {
		return fmt.Sprintf("%s: %s", ErrDenied, e.Reason)
	}
	if e.Prefix.IsValid() {
		return fmt.Sprintf("%s: %s is in %s (%s)", ErrDenied, e.Addr, e.Prefix, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", ErrDenied, e.Addr, e.Reason)
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Config configures a Guard.
type Config struct {
	// Allow, when not empty, is the exclusive allow-list: only the
	// addresses it covers may be dialed. An allow prefix at least as long
	// as the longest matching deny prefix opens the range it covers (tests
	// allow 127.0.0.0/8).
	Allow []netip.Prefix
	// Deny is added to DefaultDeny, which always applies.
	Deny []netip.Prefix
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	for _, p := range c.Allow {
		if !p.IsValid() {
			return fmt.Errorf("dialguard: invalid allow prefix %v", p)
		}
	}
	for _, p := range c.Deny {
		if !p.IsValid() {
			return fmt.Errorf("dialguard: invalid deny prefix %v", p)
		}
	}
	return nil
}

// rule is one prefix of a list, normalised, with the name of its range.
type rule struct {
	prefix netip.Prefix
	reason string
}

// Guard judges addresses. It is immutable and safe for concurrent use.
type Guard struct {
	allow []rule
	deny  []rule
}

// New returns a Guard.
func New(cfg Config) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{}
	for _, p := range cfg.Allow {
		g.allow = append(g.allow, rule{normalise(p), "allowed"})
	}
	for _, r := range defaultDeny {
		g.deny = append(g.deny, rule{normalise(netip.MustParsePrefix(r.prefix)), r.reason})
	}
	for _, p := range cfg.Deny {
		g.deny = append(g.deny, rule{normalise(p), "configured deny-list"})
	}
	return g, nil
}

// normalise masks p and turns an IPv4-mapped IPv6 prefix of at least 96
// bits into the IPv4 prefix it covers, since addresses are unmapped before
// they are judged.
func normalise(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// nat64 is the NAT64 well-known prefix (RFC 6052): an address in it
// reaches the IPv4 address it embeds in its last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Check returns nil if addr may be dialed, or a *DeniedError.
func (g *Guard) Check(addr netip.Addr) error {
	if !addr.IsValid() {
		return &DeniedError{Addr: addr, Reason: "not an IP address"}
	}
	a := addr.Unmap().WithZone("")
	if err := g.check(a, true); err != nil {
		return err
	}
	if nat64.Contains(a) {
		b := a.As16()
		v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		if err := g.check(v4, false); err != nil {
			return &DeniedError{Addr: a, Reason: "NAT64 address of a denied IPv4 address: " + err.Error()}
		}
	}
	return nil
}

// Permitted reports whether addr may be dialed.
func (g *Guard) Permitted(addr netip.Addr) bool { return g.Check(addr) == nil }

// check judges a by the longest match. With exclusive set, a non-empty
// allow-list must cover a; an embedded NAT64 address is judged without
// that (the allow-list already admitted the NAT64 address itself).
func (g *Guard) check(a netip.Addr, exclusive bool) error {
	allowBits, _ := longest(g.allow, a)
	if exclusive && len(g.allow) > 0 && allowBits < 0 {
		return &DeniedError{Addr: a, Reason: "not in the allow-list"}
	}
	denyBits, denied := longest(g.deny, a)
	if denyBits >= 0 && denyBits > allowBits {
		return &DeniedError{Addr: a, Prefix: denied.prefix, Reason: denied.reason}
	}
	return nil
}

// longest returns the length of the longest prefix of rules that contains
// a, and its rule; -1 if none does. The lists are short (a few dozen
// prefixes), and a probe dials a handful of times per address, so a linear
// scan is plenty.
func longest(rules []rule, a netip.Addr) (int, rule) {
	bits, best := -1, rule{}
	for _, r := range rules {
		if r.prefix.Bits() > bits && r.prefix.Contains(a) {
			bits, best = r.prefix.Bits(), r
		}
	}
	return bits, best
}

// Control has the signature of net.Dialer.Control. It judges the address
// the socket is about to connect to: after name resolution, before
// connect(2). An address it cannot parse is refused.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &DeniedError{Reason: fmt.Sprintf("%s address %q is not ip:port", network, address)}
	}
	return g.Check(ap.Addr())
}
