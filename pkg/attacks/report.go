package attacks

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/styx-inference/styx/pkg/keyspace"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Bounds on a report's time.
var (
	// MinTime is the earliest attack time accepted (2000-01-01 UTC).
	MinTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// MaxSkew is how far in the future of the receiver's clock a report's time
// may lie (clocks differ).
const MaxSkew = time.Hour

// Report is one attack: Addr attacked someone at Time, in the way Kind
// says, as reported to the cluster node Reporter.
type Report struct {
	Addr     netip.Addr // unmapped, without zone
	Time     time.Time
	Kind     Kind
	Reporter string // node id; set by the node that accepted the report
}

// Key identifies a report; two reports with the same key are the same.
type Key struct {
	Addr     netip.Addr
	UnixNano int64
	Kind     Kind
	Reporter string
}

// Key returns r's identity.
func (r Report) Key() Key {
	return Key{Addr: r.Addr, UnixNano: r.Time.UnixNano(), Kind: r.Kind, Reporter: r.Reporter}
}

// CheckAddr returns a as reports carry it (unmapped) or an error when it
// cannot be attacked from: not a public unicast address.
func CheckAddr(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return a, errors.New("not a valid IP address")
	case a.Zone() != "":
		return a, errors.New("an address with a zone cannot be reported")
	case !a.IsGlobalUnicast() || a.IsPrivate():
		return a, errors.New("not a public unicast address (private, loopback, link-local, multicast or unspecified)")
	}
	return a, nil
}

// CheckTime reports an error when t is before MinTime or more than
// MaxSkew after now.
func CheckTime(t, now time.Time) error {
	switch {
	case t.Before(MinTime):
		return fmt.Errorf("time %s is before %s", t.UTC().Format(time.RFC3339), MinTime.Format(time.RFC3339))
	case t.After(now.Add(MaxSkew)):
		return fmt.Errorf("time %s is more than %s in the future", t.UTC().Format(time.RFC3339), MaxSkew)
	}
	return nil
}

// Validate checks every field of r; now bounds its time.
func (r Report) Validate(now time.Time) error {
	if _, err := CheckAddr(r.Addr); err != nil {
		return fmt.Errorf("address %s: %w", r.Addr, err)
	}
	if r.Addr.Is4In6() {
		return fmt.Errorf("address %s: not unmapped", r.Addr)
	}
	if err := CheckTime(r.Time, now); err != nil {
		return err
	}
	if !r.Kind.Valid() {
		return fmt.Errorf("kind %d unknown", r.Kind)
	}
	if err := keyspace.ValidID(r.Reporter); err != nil {
		return fmt.Errorf("reporter: %w", err)
	}
	return nil
}

// Proto returns r's wire form.
func (r Report) Proto() *styxv1.AttackReport {
	return &styxv1.AttackReport{
		Address:  r.Addr.AsSlice(),
		UnixNano: r.Time.UnixNano(),
		Kind:     r.Kind.String(),
		Reporter: r.Reporter,
	}
}

// FromProto decodes a wire report and checks its fields, except that its
// time is only checked against MinTime: followers of the feed must not
// judge a report by their own clocks, or they would not converge.
func FromProto(p *styxv1.AttackReport) (Report, error) {
	if p == nil {
		return Report{}, errors.New("no report")
	}
	a, ok := netip.AddrFromSlice(p.GetAddress())
	if !ok {
		return Report{}, fmt.Errorf("address of %d bytes, want 4 or 16", len(p.GetAddress()))
	}
	a, err := CheckAddr(a)
	if err != nil {
		return Report{}, fmt.Errorf("address %s: %w", a, err)
	}
	k, err := ParseKind(p.GetKind())
	if err != nil {
		return Report{}, err
	}
	if p.GetKind() != k.String() {
		return Report{}, fmt.Errorf("kind %q is not a canonical kind word", p.GetKind())
	}
	t := time.Unix(0, p.GetUnixNano())
	if t.Before(MinTime) {
		return Report{}, fmt.Errorf("time %s is before %s", t.UTC().Format(time.RFC3339), MinTime.Format(time.RFC3339))
	}
	if err := keyspace.ValidID(p.GetReporter()); err != nil {
		return Report{}, fmt.Errorf("reporter: %w", err)
	}
	return Report{Addr: a, Time: t, Kind: k, Reporter: p.GetReporter()}, nil
}
