package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/styx-inference/styx/pkg/pki"
)

const showUsage = `styx-pki show [--ca FILE] PATH

Prints what a certificate says: its STYX identity, common name, serial,
validity and days left, SANs, issuer and key. PATH is an identity directory
(its tls.crt, checked against its ca.crt), a certificate file (checked
against --ca, by default the ca.crt beside it), or a CA directory or ca.crt
(every CA it holds). Exits 1 when the certificate is expired or not yet
valid, is not signed by a CA of the ca.crt, or carries no STYX identity.
A certificate past two thirds of its lifetime is marked "renew".

Examples:
  styx-pki show /etc/styx/pki/worker-host1
  styx-pki show --ca /etc/styx/pki/ca/ca.crt ./tls.crt
  styx-pki show /etc/styx/pki/ca`

func showCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	caFile := fs.String("ca", "", "CA certificates to check against (default: ca.crt beside the certificate)")
	return func(_ context.Context, args []string, stdout io.Writer) error {
		if len(args) != 1 {
			return usagef("give one PATH: an identity directory or a certificate file")
		}
		return show(args[0], *caFile, time.Now(), stdout)
	}
}

// show prints the certificate at path and returns an error when it is
// not valid now or not signed by its CA.
func show(path, caFile string, now time.Time, w io.Writer) error {
	certPath, err := certFile(path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(certPath)
	if err != nil {
		return err
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		return fmt.Errorf("%s: %w", certPath, err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if certs[0].IsCA {
		var problems []string
		for i, c := range certs {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			fmt.Fprintf(tw, "CA\t%s\n", c.Subject.CommonName)
			lifetime(tw, c, now)
			fmt.Fprintf(tw, "key\t%s\n", keyType(c))
			if msg := validity(c, now); msg != "" {
				problems = append(problems, fmt.Sprintf("CA %s %s", c.Subject.CommonName, msg))
			}
		}
		return join(problems)
	}
	c := certs[0]
	var problems []string
	id, idErr := pki.FromCert(c)
	if idErr != nil {
		problems = append(problems, "no STYX identity: "+idErr.Error())
		fmt.Fprintf(tw, "identity\tnone (%v)\n", idErr)
	} else {
		fmt.Fprintf(tw, "identity\t%s\n", id)
	}
	fmt.Fprintf(tw, "common name\t%s\n", c.Subject.CommonName)
	lifetime(tw, c, now)
	fmt.Fprintf(tw, "SANs\t%s\n", sans(c))
	fmt.Fprintf(tw, "key\t%s\n", keyType(c))
	fmt.Fprintf(tw, "issuer\t%s\n", c.Issuer.CommonName)
	fmt.Fprintf(tw, "usage\t%s\n", usages(c))
	if msg := validity(c, now); msg != "" {
		problems = append(problems, "certificate "+msg)
	}
	if caFile == "" {
		caFile = filepath.Join(filepath.Dir(certPath), pki.CAFile)
	}
	if signer, err := signedBy(c, caFile); err != nil {
		problems = append(problems, err.Error())
		fmt.Fprintf(tw, "signed by\tNOT VERIFIED: %v\n", err)
	} else {
		fmt.Fprintf(tw, "signed by\t%s (serial %s, in %s)\n", signer.Subject.CommonName, serialHex(signer), caFile)
	}
	if len(problems) == 0 {
		fmt.Fprintf(tw, "status\tvalid\n")
	} else {
		fmt.Fprintf(tw, "status\tINVALID\n")
	}
	return join(problems)
}

// certFile is the certificate a PATH names: a file, an identity
// directory's tls.crt, or a CA directory's ca.crt.
func certFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return path, nil
	}
	for _, f := range []string{pki.CertFile, pki.CAFile} {
		p := filepath.Join(path, f)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s holds neither %s nor %s", path, pki.CertFile, pki.CAFile)
}

func lifetime(w io.Writer, c *x509.Certificate, now time.Time) {
	fmt.Fprintf(w, "serial\t%s\n", serialHex(c))
	fmt.Fprintf(w, "not before\t%s\n", c.NotBefore.UTC().Format(time.RFC3339))
	left := c.NotAfter.Sub(now)
	var note string
	switch life := c.NotAfter.Sub(c.NotBefore); {
	case left <= 0:
		note = fmt.Sprintf("expired %s ago", days(-left))
	case left < life/3:
		note = fmt.Sprintf("%s left: renew", days(left))
	default:
		note = days(left) + " left"
	}
	fmt.Fprintf(w, "not after\t%s (%s)\n", c.NotAfter.UTC().Format(time.RFC3339), note)
}

// days says a duration in whole days, or in hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days", int(d/day))
}

// validity is "" for a certificate valid at now, or what is wrong.
func validity(c *x509.Certificate, now time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return "not valid before " + c.NotBefore.UTC().Format(time.RFC3339)
	case now.After(c.NotAfter):
		return "expired at " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// signedBy returns the CA of caFile that signed c.
func signedBy(c *x509.Certificate, caFile string) (*x509.Certificate, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("no CA to check against: %w (give --ca FILE)", err)
	}
	cas, err := pki.ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	for _, ca := range cas {
		if ca.IsCA && c.CheckSignatureFrom(ca) == nil {
			return ca, nil
		}
	}
	return nil, fmt.Errorf("not signed by any CA in %s", caFile)
}

func sans(c *x509.Certificate) string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, "URI:"+u.String())
	}
	for _, d := range c.DNSNames {
		out = append(out, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		out = append(out, "IP:"+ip.String())
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

func usages(c *x509.Certificate) string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "serverAuth")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "clientAuth")
		default:
			out = append(out, fmt.Sprintf("ext-key-usage-%d", u))
		}
	}
	if len(out) == 0 {
		return "any"
	}
	return strings.Join(out, ", ")
}

func keyType(c *x509.Certificate) string {
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func join(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}
