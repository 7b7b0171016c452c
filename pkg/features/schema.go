package features

import "strconv"

// The feature schemas this build speaks. A model records the version it
// was trained on and its feature names, and is only ever fed that schema.
// Add a version whenever a feature is added, removed, reordered or
// computed differently.
const (
	// SchemaVersion is schema 1: the Count features from the location
	// database alone (Extractor).
	SchemaVersion = 1
	// SchemaHistory is schema 2: schema 1's features, then the history
	// block (HistAddrAttacks to HistASAttacks, CountHistory in all) from
	// STYX's own verdicts and attack reports (HistoryExtractor).
	SchemaHistory = 2
)

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

	// Count is the length of a schema 1 feature vector.
	Count
)

// Indexes of the history block that schema 2 appends. Every one is 0 when
// the history holds nothing about the address, its bucket and its AS.
const (
	HistAddrAttacks = Count + iota
	HistAddrAttackKinds
	HistAddrAttackRecency
	HistBucketVerdicts
	HistBucketProxyShare
	HistBucketAttacks
	HistASVerdicts
	HistASProxyShare
	HistASAttacks

	// CountHistory is the length of a schema 2 feature vector.
	CountHistory
)

// names are the stable names of the features, in schema order.
var names = [CountHistory]string{
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

	HistAddrAttacks:       "hist_addr_attacks",
	HistAddrAttackKinds:   "hist_addr_attack_kinds",
	HistAddrAttackRecency: "hist_addr_attack_recency",
	HistBucketVerdicts:    "hist_bucket_verdicts",
	HistBucketProxyShare:  "hist_bucket_proxy_share",
	HistBucketAttacks:     "hist_bucket_attacks",
	HistASVerdicts:        "hist_as_verdicts",
	HistASProxyShare:      "hist_as_proxy_share",
	HistASAttacks:         "hist_as_attacks",
}

// descriptions say what each feature is (docs and `styx-trainer inspect`).
var descriptions = [CountHistory]string{
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

	HistAddrAttacks:       "attack reports against the address (history)",
	HistAddrAttackKinds:   "distinct kinds of attack among them",
	HistAddrAttackRecency: "1/(1 + days from the address's latest attack to the history's clock), 0 when never attacked",
	HistBucketVerdicts:    "other addresses of the IPv4 /24 or IPv6 /48 with a verdict (history)",
	HistBucketProxyShare:  "proxies among those verdicts, shrunk toward 0: proxies/(verdicts+2)",
	HistBucketAttacks:     "attack reports against the other addresses of the /24 or /48",
	HistASVerdicts:        "other addresses of the AS with a verdict (history)",
	HistASProxyShare:      "proxies among those verdicts, shrunk toward 0: proxies/(verdicts+2)",
	HistASAttacks:         "attack reports against the other addresses of the AS",
}

// Names returns the feature names of schema 1 in schema order (a new
// slice).
func Names() []string { return NamesOf(SchemaVersion) }

// NamesOf returns the feature names of a schema this build speaks (nil
// for another).
func NamesOf(schema int) []string {
	n := NumFeaturesOf(schema)
	if n == 0 {
		return nil
	}
	return append([]string(nil), names[:n]...)
}

// NumFeaturesOf is the length of a schema's vectors: Count for schema 1,
// CountHistory for schema 2, 0 for a schema this build does not speak.
func NumFeaturesOf(schema int) int {
	switch schema {
	case SchemaVersion:
		return Count
	case SchemaHistory:
		return CountHistory
	}
	return 0
}

// Name returns the name of feature i.
func Name(i int) string {
	if i < 0 || i >= CountHistory {
		return ""
	}
	return names[i]
}

// Description says what feature i is.
func Description(i int) string {
	if i < 0 || i >= CountHistory {
		return ""
	}
	return descriptions[i]
}

// Compatible reports whether a model's schema version and feature names
// match a schema this build speaks (1 or 2), and why not.
func Compatible(version int, featureNames []string) error {
	want := NumFeaturesOf(version)
	if want == 0 {
		return &SchemaError{Reason: "schema version", Got: version}
	}
	if len(featureNames) != want {
		return &SchemaError{Reason: "feature count", Got: len(featureNames), Schema: version}
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
	Schema int // for a feature count: the schema whose count differs
}

func (e *SchemaError) Error() string {
	switch e.Reason {
	case "schema version":
		return "feature schema version " + strconv.Itoa(e.Got) + ", this build speaks " + strconv.Itoa(SchemaVersion) + " and " + strconv.Itoa(SchemaHistory)
	case "feature count":
		return strconv.Itoa(e.Got) + " features, schema " + strconv.Itoa(e.Schema) + " has " + strconv.Itoa(NumFeaturesOf(e.Schema))
	}
	return "feature schema mismatch: " + e.Reason
}
