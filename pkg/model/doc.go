// Package model is Raven's learner and model artifact: gradient-boosted
// decision trees in pure Go, and the versioned, checksummed file that
// carries them from the trainer to every inference server.
//
// Learning (Booster) bins every float feature into at most 256 quantile
// bins once, then grows depth-limited trees on gradient/hessian histograms
// of the logistic loss, with shrinkage (learning rate), L2 regularisation of
// leaf values, row and column subsampling. Each tree draws its random
// numbers from a generator seeded by (seed, head, tree index) alone, so a
// run that is stopped and resumed from its trees gives the same model,
// bit for bit, as one that never stopped.
//
// A Model holds one binary head per question ("anonymiser", "hostile"),
// each a base score plus trees, with its decision threshold, the feature
// schema it was trained on, its metrics and provenance. Save writes it as
// JSON: an envelope whose "sha256" is the hash of the exact "payload" bytes;
// Load verifies the hash and the feature schema before anything is used.
//
// Compile lays the trees out for scoring (score.go): x is compared with
// every distinct threshold at once, and each tree, padded to a complete
// binary tree, is walked without a data-dependent branch. Probability scores
// one head and Probabilities two (sharing the comparison) without
// allocating; the scores are bit for bit those of walking the trees.
package model
