// Package pkiflag gives every STYX binary the same two trust flags:
// --pki-dir (its identity directory) and --insecure (plaintext, on
// purpose). With neither, a binary refuses to start.
package pkiflag

import (
	"errors"
	"flag"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/pki"
)

// Flags are the trust flags of one binary.
type Flags struct {
	Dir      string
	Insecure bool
}

// Register adds --pki-dir and --insecure to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Dir, "pki-dir", "", "identity directory: ca.crt (the CA to trust), tls.crt and tls.key (this process's certificate, reloaded when renewed); every connection then uses mutual TLS")
	fs.BoolVar(&f.Insecure, "insecure", false, "plaintext on every connection, with no authentication (development only; logs a warning)")
}

// ErrNoIdentity is a binary started with neither flag.
var ErrNoIdentity = errors.New("no identity: give --pki-dir DIR (ca.crt, tls.crt, tls.key) or --insecure for plaintext")

// Load returns the identity, or nil with --insecure (after a warning).
func (f Flags) Load(log zerolog.Logger) (*pki.Source, error) {
	switch {
	case f.Dir != "" && f.Insecure:
		return nil, errors.New("--pki-dir and --insecure both given: choose one")
	case f.Dir != "":
		src, err := pki.Load(f.Dir, log)
		if err != nil {
			return nil, err
		}
		log.Info().Str("identity", src.Identity().String()).Time("not_after", src.NotAfter()).Str("pki_dir", f.Dir).Msg("mutual TLS on every connection")
		return src, nil
	case f.Insecure:
		log.Warn().Msg("--insecure: plaintext with no authentication on every connection; anyone who reaches these ports controls the cluster")
		return nil, nil
	default:
		return nil, ErrNoIdentity
	}
}

// Require checks that src is one of roles.
func Require(src *pki.Source, roles ...pki.Role) error {
	if src == nil {
		return nil
	}
	return pki.AnyOf(roles...)(src.Identity())
}
