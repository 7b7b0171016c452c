// Package locdb reads the IPFire location database (location.db, format
// version 1): a public map from IP networks to country, autonomous system and
// flags, shipped as a single signed file.
//
// The file is memory-mapped read-only and never copied into the heap: Open
// checks the header and every section bound, verifies the ECDSA signature
// (unless told not to) and builds small indexes (countries, a sample of the
// AS numbers, an IPv4 jump table) in about a millisecond. Lookup walks the
// on-disk binary trie with every read bounded, without allocating, and is
// safe for concurrent use; Networks walks all networks.
//
// A bit-per-node walk costs one cache miss per address bit (1 to 3 µs on
// the real database), so Open also starts building a lookup index in a
// background goroutine: the trie flattened into the disjoint address ranges
// that get the same answer, stored in a poptrie (a direct table on the
// first 18 bits, then 64-way nodes found by counting bitmap bits), whose
// leaves point at deduplicated (country, ASN, flags, AS name) tuples. An
// indexed IPv4 lookup reads a top entry, usually one node, a leaf and a
// tuple (an IPv6 one a few more nodes), and not the mapping: about 0.1 µs.
// For the real database (1.29 M networks) the index holds 10.4 MB of heap
// and takes 150 to 300 ms of one core to build. Until it is
// ready, lookups walk the trie, with the same answers; WaitIndex waits for
// it, Close stops the build and waits for its goroutine, and
// Config.NoIndex skips it. The IPv4 index answers every IPv4 address; the
// IPv6 one covers the first 60 bits and hands the addresses where the trie
// goes deeper back to the walk (in the real database, only ::/60, above
// the IPv4 part). A family whose flattening would visit more nodes than the
// file holds (a corrupt file with cyclic or shared children) is not
// indexed, and is walked. LookupBatch answers many addresses at once; the ones the
// index does not cover it walks interleaved, which is several times faster
// per address than the plain walk when the trie is not in the CPU caches.
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
