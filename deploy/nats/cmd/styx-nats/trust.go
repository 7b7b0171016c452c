package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/healthcheck"
	"github.com/styx-inference/styx/pkg/natsauth"
	"github.com/styx-inference/styx/pkg/pki"
)

// handleSignals is nats-server's signal handling for a server whose TLS
// and authentication come from auth: the same signals, but a reload
// (SIGHUP) applies auth to the configuration file's options before
// handing them over, as nats-server's own reload would drop them. A
// SIGTERM stops the server also during lame duck mode. stop ends the
// handling.
func handleSignals(s *server.Server, auth *natsauth.Auth, configFile string) (stop func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case sig := <-c:
				s.Noticef("Trapped %q signal", sig)
				switch sig {
				case syscall.SIGINT, syscall.SIGTERM:
					go s.Shutdown()
				case syscall.SIGUSR1:
					s.ReOpenLogFile()
				case syscall.SIGUSR2:
					go s.LameDuckShutdown()
				case syscall.SIGHUP:
					if err := reload(s, auth, configFile); err != nil {
						s.Errorf("Failed to reload server configuration: %v", err)
					}
				}
			}
		}
	}()
	return func() {
		signal.Stop(c)
		close(done)
		wg.Wait()
	}
}

// reload reads the configuration file again and applies it with the
// trust of --pki-dir.
func reload(s *server.Server, auth *natsauth.Auth, configFile string) error {
	if configFile == "" {
		return errors.New("can only reload config when a file is provided using -c or --config")
	}
	o, err := server.ProcessConfigFile(configFile)
	if err != nil {
		return err
	}
	if err := checkPKIOptions(o); err != nil {
		return err
	}
	auth.Configure(o)
	o.NoSigs = true
	return s.ReloadOptions(o)
}

// healthcheckMain is "styx-nats healthcheck": it asks the monitoring port
// for healthPath, over HTTPS with --pki-dir (accepting a nats server of
// that directory's CA, presenting its certificate), over HTTP without. It
// returns 0 when healthy, 1 when not (the reason on stderr) and 2 on a
// usage error.
func healthcheckMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", healthAddr, "the server's monitoring address (--https_port with --pki-dir, --http_port without; an unspecified host means loopback)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	dir := fs.String("pki-dir", "", "identity directory (ca.crt, tls.crt, tls.key): check over HTTPS, accepting a nats server of its CA")
	insecure := fs.Bool("insecure", false, "check over plain HTTP (the default without --pki-dir)")
	fs.Usage = envflag.Usage(fs, "STYX", prog+" healthcheck [flags]\n\nExits 0 when the server at --http-addr answers 200 on "+healthPath+", 1 otherwise:\nover HTTPS with --pki-dir (a nats server of its CA only), over HTTP without.\nMeant for container health checks on images without a shell.")
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
	if *dir != "" && *insecure {
		fmt.Fprintf(stderr, "%s healthcheck: --pki-dir and --insecure both given: choose one\n", prog)
		return 2
	}
	url, err := healthcheck.URL(*addr, healthPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *dir == "" {
		err = healthcheck.Check(ctx, url)
	} else {
		err = checkHTTPS(ctx, *dir, "https"+strings.TrimPrefix(url, "http"))
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: unhealthy: %v\n", prog, err)
		return 1
	}
	return 0
}

// checkHTTPS GETs url over TLS with the identity in dir, accepting only a
// nats server of its CA, and returns nil on 200 OK.
func checkHTTPS(ctx context.Context, dir, url string) error {
	src, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: src.ClientConfig(pki.AnyOf(pki.NATS))}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
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
