// Package features is Raven's feature schema: the one ordered, versioned
// list of numbers that the trainer learns from and every inference engine
// scores, so that a model trained on schema N is only ever fed schema N.
//
// An Extractor is built once from an open location database: one pass over
// its networks fills an in-memory index of per-AS, per-country and
// per-bucket statistics (IPv4 /16 and /24, IPv6 /32 and /48) and sorted
// lists of the flagged networks. Extract then looks an address up and
// writes its features without allocating.
//
// Every feature describes a network's surroundings with the network itself
// left out ("leave one out"): its own anonymous-proxy and drop flags are not
// features, and every count or share it would contribute to is computed
// without it. The trainer's examples and live addresses go through the same
// code, so the model learns to find flagged networks from their
// neighbourhood, and an engine adds the network's own flags on top.
//
//	ex, err := features.NewExtractor(db)
//	x := make([]float32, features.Count)
//	if n, ok := ex.Extract(addr, x); ok { ... }
package features
