// Package trainer will build the Raven model every inference server loads.
// Until it lands, workers run the transparent scoring rule in pkg/raven and
// the styx-trainer command says so.
package trainer
