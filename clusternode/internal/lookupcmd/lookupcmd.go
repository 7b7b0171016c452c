package lookupcmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/styx-inference/styx/pkg/locdb"
)

// EnvDB names the environment variable that sets the database path when
// --db is not on the command line.
const EnvDB = "STYX_DB"

// Exit statuses.
const (
	exitOK        = 0
	exitBadAddr   = 1 // some argument is not an IP address, or the run was interrupted
	exitUsage     = 2 // bad flags, no address, database not openable
	errNotFound   = "not found"
	errInvalidIP  = "invalid IP address"
	errCancelled  = "cancelled"
	plainUnknown  = "-"
	commandPrefix = "lookup: "
)

const usageText = `Usage: styx-node lookup [--json] [--db PATH] [--key PATH] [--skip-verify] ADDR...

Looks each ADDR (IPv4 or IPv6; an IPv4-mapped address such as ::ffff:8.8.8.8
counts as IPv4) up in the location database and prints one line per address:
the most specific network containing it, its country and continent, its
autonomous system and its flags. Flags may come before or after the addresses.

Flags:
  --json         print one JSON object per line, with exactly the keys
                 address, network, country, country_name, continent, asn,
                 as_name, anonymous_proxy, satellite, anycast, drop
                 (strings are "" and asn is 0 when unknown); an address that
                 fails prints {"address": ADDR, "error": REASON}
  --db PATH      database file (default: $STYX_DB if set, else
                 /usr/share/libloc-location/location.db)
  --key PATH     PEM public key the database must be signed with (default:
                 /var/lib/location/signing-key.pem)
  --skip-verify  do not check the database signature: starts faster (no full
                 read of the file) but accepts a tampered file
  -h, --help     print this help

Environment:
  STYX_DB        database path, used when --db is not given

Plain output, one line per address:
  8.8.8.8 network=8.8.8.0/24 country=US (United States of America) continent=NA asn=15169 as_name="GOOGLE" flags=anycast
  Unknown values print as "-". The flags are anonymous_proxy, satellite,
  anycast and drop (hostile network, safe to drop). An address no network
  covers prints: 10.0.0.1 error="not found"; an argument that is not an IP
  address prints: foo error="invalid IP address".

Exit status:
  0  every argument was an IP address (whether found or not)
  1  at least one argument is not an IP address, or the run was interrupted
  2  usage error, or the database cannot be opened or verified

Data: IPFire Location database, https://location.ipfire.org/, CC BY-SA 4.0.
Whoever shows these results to others must give the same credit and share
alike (https://creativecommons.org/licenses/by-sa/4.0/).
`

// options is the parsed command line.
type options struct {
	json       bool
	db         string
	key        string
	skipVerify bool
	addrs      []string
}

// Run executes `lookup` with args (not including the command name) and
// returns the process exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, usageText)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\nRun 'styx-node lookup --help' for usage.\n", commandPrefix, err)
		return exitUsage
	}

	db, err := locdb.Open(locdb.Config{Path: opts.db, KeyPath: opts.key, SkipVerify: opts.skipVerify})
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\n", commandPrefix, err)
		return exitUsage
	}
	defer db.Close()

	out := newPrinter(stdout, opts.json)
	status := exitOK
	for _, arg := range opts.addrs {
		if ctx.Err() != nil {
			out.flush()
			fmt.Fprintf(stderr, "%s%s: %v\n", commandPrefix, errCancelled, context.Cause(ctx))
			return exitBadAddr
		}
		addr, err := netip.ParseAddr(arg)
		if err != nil {
			out.failure(arg, errInvalidIP)
			status = exitBadAddr
			continue
		}
		n, ok := db.Lookup(addr)
		if !ok {
			out.failure(arg, errNotFound)
			continue
		}
		out.network(arg, n)
	}
	if err := out.flush(); err != nil {
		fmt.Fprintf(stderr, "%swrite output: %v\n", commandPrefix, err)
		return exitUsage
	}
	return status
}

// parseArgs parses flags anywhere among the addresses (an address never
// starts with '-'); everything after "--" is an address.
func parseArgs(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Run prints usage and errors itself
	fs.BoolVar(&o.json, "json", false, "")
	fs.StringVar(&o.db, "db", locdb.DefaultPath, "")
	fs.StringVar(&o.key, "key", "", "")
	fs.BoolVar(&o.skipVerify, "skip-verify", false, "")

	rest := args
	for len(rest) > 0 {
		before := rest
		if err := fs.Parse(rest); err != nil {
			return o, err
		}
		rest = fs.Args()
		if consumed := len(before) - len(rest); consumed > 0 && before[consumed-1] == "--" {
			o.addrs = append(o.addrs, rest...)
			break
		}
		if len(rest) > 0 {
			o.addrs = append(o.addrs, rest[0])
			rest = rest[1:]
		}
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["db"] {
		if v := os.Getenv(EnvDB); v != "" {
			o.db = v
		}
	}
	if o.db == "" {
		return o, errors.New("--db must not be empty")
	}
	if len(o.addrs) == 0 {
		return o, errors.New("no address given")
	}
	return o, nil
}

// printer writes result lines in the chosen format.
type printer struct {
	w   *bufio.Writer
	enc *json.Encoder // nil for plain output
	err error
}

func newPrinter(w io.Writer, asJSON bool) *printer {
	p := &printer{w: bufio.NewWriter(w)}
	if asJSON {
		p.enc = json.NewEncoder(p.w)
		p.enc.SetEscapeHTML(false)
	}
	return p
}

// jsonNetwork is the --json line for a found address; the key set is part
// of the command's interface.
type jsonNetwork struct {
	Address        string `json:"address"`
	Network        string `json:"network"`
	Country        string `json:"country"`
	CountryName    string `json:"country_name"`
	Continent      string `json:"continent"`
	ASN            uint32 `json:"asn"`
	ASName         string `json:"as_name"`
	AnonymousProxy bool   `json:"anonymous_proxy"`
	Satellite      bool   `json:"satellite"`
	Anycast        bool   `json:"anycast"`
	Drop           bool   `json:"drop"`
}

type jsonFailure struct {
	Address string `json:"address"`
	Error   string `json:"error"`
}

func (p *printer) network(arg string, n locdb.Network) {
	if p.enc != nil {
		p.writeJSON(jsonNetwork{
			Address:        arg,
			Network:        n.Prefix.String(),
			Country:        n.Country,
			CountryName:    n.CountryName,
			Continent:      n.Continent,
			ASN:            n.ASN,
			ASName:         n.ASName,
			AnonymousProxy: n.Flags.AnonymousProxy(),
			Satellite:      n.Flags.SatelliteProvider(),
			Anycast:        n.Flags.Anycast(),
			Drop:           n.Flags.Drop(),
		})
		return
	}
	var b strings.Builder
	b.WriteString(plainToken(arg))
	b.WriteString(" network=")
	b.WriteString(n.Prefix.String())
	b.WriteString(" country=")
	switch {
	case n.Country == "":
		b.WriteString(plainUnknown)
	case n.CountryName == "":
		b.WriteString(plainToken(n.Country))
	default:
		fmt.Fprintf(&b, "%s (%s)", plainToken(n.Country), n.CountryName)
	}
	b.WriteString(" continent=")
	b.WriteString(plainToken(orUnknown(n.Continent)))
	b.WriteString(" asn=")
	if n.ASN == 0 {
		b.WriteString(plainUnknown)
	} else {
		b.WriteString(strconv.FormatUint(uint64(n.ASN), 10))
	}
	b.WriteString(" as_name=")
	b.WriteString(strconv.Quote(n.ASName))
	b.WriteString(" flags=")
	b.WriteString(orUnknown(n.Flags.String()))
	p.line(b.String())
}

func (p *printer) failure(arg, reason string) {
	if p.enc != nil {
		p.writeJSON(jsonFailure{Address: arg, Error: reason})
		return
	}
	p.line(plainToken(arg) + " error=" + strconv.Quote(reason))
}

// writeJSON writes v and a newline.
func (p *printer) writeJSON(v any) {
	if err := p.enc.Encode(v); err != nil {
		p.setErr(err)
	}
}

func (p *printer) line(s string) {
	if _, err := p.w.WriteString(s); err != nil {
		p.setErr(err)
	}
	if err := p.w.WriteByte('\n'); err != nil {
		p.setErr(err)
	}
}

func (p *printer) setErr(err error) {
	if p.err == nil {
		p.err = err
	}
}

func (p *printer) flush() error {
	if err := p.w.Flush(); err != nil {
		p.setErr(err)
	}
	return p.err
}

// plainToken returns s as is when it is a plain token, else quoted, so
// that every plain line splits on spaces.
func plainToken(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '=' {
			return strconv.Quote(s)
		}
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return plainUnknown
	}
	return s
}
