// Package trainer builds the Raven model every inference server loads
// (styx-trainer): it turns the location database (and optional labelled
// address lists) into leave-one-out feature vectors (pkg/features), splits
// them by whole AS into training, validation and held-out sets, boosts one
// tree ensemble per head (pkg/model), compares the model with the rule
// engine on the held-out ASes, and writes the versioned artifact.
//
// Train checkpoints its trees into the output directory every few trees and
// when interrupted; a run started again with Resume continues from there and
// ends with the same model as a run that was never stopped.
//
// Subpackages: cli (the styx-trainer command line), internal/labels (label
// files), internal/progress (progress bar or lines).
package trainer
