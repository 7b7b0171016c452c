// Package locdb reads the IPFire location database (location.db, format
// version 1): a public map from IP networks to country, autonomous system and
// flags, shipped as a single signed file.
//
// The file is memory-mapped read-only and never decoded as a whole: Open
// checks the header and every section bound, verifies the ECDSA signature
// (unless told not to) and builds small indexes (countries, a sample of the
// AS numbers, an IPv4 jump table); Lookup then walks the on-disk binary trie
// with every read bounded, without allocating, and is safe for concurrent
// use. LookupBatch answers many addresses at once, several times faster per
// address when the trie is not in the CPU caches; Networks walks them all.
//
//	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath})
//	if err != nil {
//		return err
//	}
//	defer db.Close()
//	if n, ok := db.Lookup(netip.MustParseAddr("8.8.8.8")); ok {
//		fmt.Println(n.Prefix, n.Country, n.ASN, n.ASName) // 8.8.8.0/24 US 15169 GOOGLE
//	}
//
// Network.ASName points into the mapping and is valid only while the DB is
// open; use Network.Clone to keep a result longer.
//
// Data shown to users must credit its source: "IPFire Location database,
// https://location.ipfire.org/, CC BY-SA 4.0" (see Attribution).
//
// Package locdbtest builds fixture databases for tests.
package locdb
