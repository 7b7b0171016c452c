package healthcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/styx-inference/styx/pkg/envflag"
)

// Check GETs url and returns nil when the answer is 200 OK.
func Check(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// URL is the loopback URL of path on a server listening on addr: an
// unspecified or empty host (0.0.0.0, ::, ":8080") becomes 127.0.0.1 (or
// ::1), since a check runs beside the server.
func URL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	if port == "" || port == "0" {
		return "", fmt.Errorf("listen address %q: a fixed port is needed", addr)
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// Main runs the subcommand "<prog> healthcheck [--http-addr A] [--timeout D]"
// against path on the server at --http-addr (default defaultAddr, or
// STYX_HTTP_ADDR). It returns 0 when healthy, 1 when not (the reason on
// stderr) and 2 on a usage error.
func Main(prog string, args []string, defaultAddr, path string, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", defaultAddr, "the server's HTTP listen address (an unspecified host means loopback)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	fs.Usage = envflag.Usage(fs, "STYX", prog+" healthcheck [flags]\n\nExits 0 when the server at --http-addr answers 200 on "+path+", 1 otherwise.\nMeant for container health checks on images without a shell.")
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s healthcheck: unexpected arguments %q\n", prog, fs.Args())
		return 2
	}
	url, err := URL(*addr, path)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := Check(ctx, url); err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: unhealthy: %v\n", prog, err)
		return 1
	}
	return 0
}
