package features

import "strconv"

// SchemaVersion is the version of the feature schema below. Change it
// whenever a feature is added, removed, reordered or computed differently:
// a model records the version it was trained on and refuses another.
const SchemaVersion = 1

// Missing is the value of a feature that does not apply (a share over no
// other networks, an AS fact for a network without an ASN, no flagged
// network in the family). Every real value is >= 0, so trees can split
// missing values off on their own.
const Missing float32 = -1

// Indexes of the features in a feature vector.
const (
	IsIPv6 = iota
	PrefixLen
	Continent
	CountryCode
	FlagSatellite
	FlagAnycast
	ASNumber
	HasASN
	ASNamed
	ASHostingName
	ASNetworks
	ASV4AddrsLog2
	ASV6Networks
	ASCountries
	ASAnonOthers
	ASDropOthers
	ASAnonShare
	ASDropShare
	ASAnycastShare
	ASSatelliteShare
	WideNetworks
	WideASNs
	WideAnonOthers
	WideDropOthers
	WideAnonShare
	WideDropShare
	NarrowNetworks
	NarrowAnonOthers
	NarrowDropOthers
	NarrowAnonShare
	NarrowDropShare
	NearAnonLog2
	NearDropLog2
	CountryNetworks
	CountryAnonShare
	CountryDropShare

	// Count is the length of a feature vector.
	Count
)

// names are the stable names of the features, in schema order.
var names = [Count]string{
	IsIPv6:           "is_ipv6",
	PrefixLen:        "prefix_len",
	Continent:        "continent",
	CountryCode:      "country_code",
	FlagSatellite:    "flag_satellite",
	FlagAnycast:      "flag_anycast",
	ASNumber:         "asn",
	HasASN:           "has_asn",
	ASNamed:          "as_named",
	ASHostingName:    "as_hosting_name",
	ASNetworks:       "as_networks",
	ASV4AddrsLog2:    "as_v4_addrs_log2",
	ASV6Networks:     "as_v6_networks",
	ASCountries:      "as_countries",
	ASAnonOthers:     "as_anon_others",
	ASDropOthers:     "as_drop_others",
	ASAnonShare:      "as_anon_share",
	ASDropShare:      "as_drop_share",
	ASAnycastShare:   "as_anycast_share",
	ASSatelliteShare: "as_satellite_share",
	WideNetworks:     "wide_networks",
	WideASNs:         "wide_asns",
	WideAnonOthers:   "wide_anon_others",
	WideDropOthers:   "wide_drop_others",
	WideAnonShare:    "wide_anon_share",
	WideDropShare:    "wide_drop_share",
	NarrowNetworks:   "narrow_networks",
	NarrowAnonOthers: "narrow_anon_others",
	NarrowDropOthers: "narrow_drop_others",
	NarrowAnonShare:  "narrow_anon_share",
	NarrowDropShare:  "narrow_drop_share",
	NearAnonLog2:     "near_anon_log2",
	NearDropLog2:     "near_drop_log2",
	CountryNetworks:  "country_networks",
	CountryAnonShare: "country_anon_share",
	CountryDropShare: "country_drop_share",
}

// descriptions say what each feature is (docs and `styx-trainer inspect`).
var descriptions = [Count]string{
	IsIPv6:           "1 for an IPv6 network, 0 for IPv4",
	PrefixLen:        "prefix length of the network (IPv4 bits for IPv4)",
	Continent:        "continent code as a category: AF=0 AN=1 AS=2 EU=3 NA=4 OC=5 SA=6, missing when unknown",
	CountryCode:      "country code as a target-free category: (c0-'A')*26+(c1-'A'), missing when unknown",
	FlagSatellite:    "the network's satellite-provider flag",
	FlagAnycast:      "the network's anycast flag",
	ASNumber:         "the AS number (0 for none); low numbers are old registrations",
	HasASN:           "1 when the network names an AS",
	ASNamed:          "1 when the AS has a record with a name in the database",
	ASHostingName:    "1 when the AS name looks like a hosting provider (raven.HostingName)",
	ASNetworks:       "other networks of the same AS",
	ASV4AddrsLog2:    "log2(1 + IPv4 addresses announced by the AS)",
	ASV6Networks:     "IPv6 networks of the AS",
	ASCountries:      "distinct countries of the AS's networks",
	ASAnonOthers:     "other networks of the AS flagged anonymous proxy",
	ASDropOthers:     "other networks of the AS flagged drop",
	ASAnonShare:      "share of the AS's other networks flagged anonymous proxy",
	ASDropShare:      "share of the AS's other networks flagged drop",
	ASAnycastShare:   "share of the AS's networks flagged anycast",
	ASSatelliteShare: "share of the AS's networks flagged satellite",
	WideNetworks:     "other networks starting in the same IPv4 /16 or IPv6 /32",
	WideASNs:         "distinct ASNs of the networks starting in the same /16 or /32",
	WideAnonOthers:   "other networks of the /16 or /32 flagged anonymous proxy",
	WideDropOthers:   "other networks of the /16 or /32 flagged drop",
	WideAnonShare:    "share of the other networks of the /16 or /32 flagged anonymous proxy",
	WideDropShare:    "share of the other networks of the /16 or /32 flagged drop",
	NarrowNetworks:   "other networks starting in the same IPv4 /24 or IPv6 /48",
	NarrowAnonOthers: "other networks of the /24 or /48 flagged anonymous proxy",
	NarrowDropOthers: "other networks of the /24 or /48 flagged drop",
	NarrowAnonShare:  "share of the other networks of the /24 or /48 flagged anonymous proxy",
	NarrowDropShare:  "share of the other networks of the /24 or /48 flagged drop",
	NearAnonLog2:     "log2(1 + distance) from the network's start to the nearest other anonymous-proxy network's start (IPv4: 32-bit space, IPv6: top 64 bits)",
	NearDropLog2:     "log2(1 + distance) to the nearest other drop network, as near_anon_log2",
	CountryNetworks:  "other networks of the same country",
	CountryAnonShare: "share of the country's other networks flagged anonymous proxy",
	CountryDropShare: "share of the country's other networks flagged drop",
}

// Names returns the feature names in schema order (a new slice).
func Names() []string { return append([]string(nil), names[:]...) }

// Name returns the name of feature i.
func Name(i int) string {
	if i < 0 || i >= Count {
		return ""
	}
	return names[i]
}

// Description says what feature i is.
func Description(i int) string {
	if i < 0 || i >= Count {
		return ""
	}
	return descriptions[i]
}

// Compatible reports whether a model's schema version and feature names
// match this schema, and why not.
func Compatible(version int, featureNames []string) error {
	if version != SchemaVersion {
		return &SchemaError{Reason: "schema version", Got: version}
	}
	if len(featureNames) != Count {
		return &SchemaError{Reason: "feature count", Got: len(featureNames)}
	}
	for i, n := range featureNames {
		if n != names[i] {
			return &SchemaError{Reason: "feature " + names[i] + " named " + n, Got: version}
		}
	}
	return nil
}

// SchemaError says how a model's schema differs from this one.
type SchemaError struct {
	Reason string
	Got    int
}

func (e *SchemaError) Error() string {
	switch e.Reason {
	case "schema version":
		return "feature schema version " + strconv.Itoa(e.Got) + ", this build speaks " + strconv.Itoa(SchemaVersion)
	case "feature count":
		return strconv.Itoa(e.Got) + " features, schema " + strconv.Itoa(SchemaVersion) + " has " + strconv.Itoa(Count)
	}
	return "feature schema mismatch: " + e.Reason
}
