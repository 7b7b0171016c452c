package worker

import (
	"flag"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/columns"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Network rule of these tests: every server listens on 127.0.0.0/8 at a
// port the OS chose, and the probe's guard allows 127.0.0.0/8 only.

func TestProbeConfigValidate(t *testing.T) {
	on := func(c *Config) {
		c.Probe = true
		c.ProbeTarget = netip.MustParseAddrPort("198.51.100.10:7")
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		errHas string // "" = valid
	}{
		{"off by default, target or not", func(*Config) {}, ""},
		{"off: probe settings are not checked", func(c *Config) { c.ProbeConcurrencyMin = 0; c.ProbePorts = nil }, ""},
		{"on with a target", on, ""},
		{"on with a banner and an allow-list", func(c *Config) {
			on(c)
			c.ProbeBanner = `styx\r\n`
			c.ProbeAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}, ""},
		{"on without a target", func(c *Config) { on(c); c.ProbeTarget = netip.AddrPort{} }, "--probe needs --probe-target"},
		{"target without a port", func(c *Config) { on(c); c.ProbeTarget = netip.MustParseAddrPort("198.51.100.10:0") }, "non-zero port"},
		{"unspecified target", func(c *Config) { on(c); c.ProbeTarget = netip.MustParseAddrPort("0.0.0.0:7") }, "non-zero port"},
		{"ipv6 target", func(c *Config) { on(c); c.ProbeTarget = netip.MustParseAddrPort("[2001:db8::1]:7") }, "IPv4"},
		{"long banner", func(c *Config) { on(c); c.ProbeBanner = strings.Repeat("x", 300) }, "banner of 300 bytes"},
		{"bad banner escape", func(c *Config) { on(c); c.ProbeBanner = `x\` }, "bad escape"},
		{"no ports", func(c *Config) { on(c); c.ProbePorts = nil }, "no probe ports"},
		{"port twice", func(c *Config) { on(c); c.ProbePorts = []uint16{1080, 1080} }, "listed twice"},
		{"bad allow prefix", func(c *Config) { on(c); c.ProbeAllow = []netip.Prefix{{}} }, "allow prefix"},
		{"min concurrency 0", func(c *Config) { on(c); c.ProbeConcurrencyMin = 0 }, "concurrency min"},
		{"max below min", func(c *Config) { on(c); c.ProbeConcurrencyMax = 2 }, "concurrency max 2, want >= min 4"},
		{"negative rate", func(c *Config) { on(c); c.ProbeRate = -1 }, "probe rate"},
		{"no timeout", func(c *Config) { on(c); c.ProbeTimeout = 0 }, "probe timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.errHas == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.errHas)
			}
		})
	}
}

func TestProbeFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := DefaultConfig()
	c.RegisterFlags(fs)
	if c.Probe {
		t.Fatal("the probe is on by default")
	}
	args := []string{
		"--probe", "--probe-ports=1080, 3128", "--probe-target=127.0.0.2:7", `--probe-banner=hello\n`,
		"--probe-allow=127.0.0.0/8,10.1.2.3", "--probe-concurrency-min=2", "--probe-concurrency-max=8",
		"--probe-rate=5.5", "--probe-timeout=2s",
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Probe = true
	want.ProbePorts = []uint16{1080, 3128}
	want.ProbeTarget = netip.MustParseAddrPort("127.0.0.2:7")
	want.ProbeBanner = `hello\n`
	want.ProbeAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32")}
	want.ProbeConcurrencyMin, want.ProbeConcurrencyMax = 2, 8
	want.ProbeRate = 5.5
	want.ProbeTimeout = 2 * time.Second
	if !slices.Equal(c.ProbePorts, want.ProbePorts) || c.ProbeTarget != want.ProbeTarget || c.ProbeBanner != want.ProbeBanner ||
		!slices.Equal(c.ProbeAllow, want.ProbeAllow) || c.Probe != want.Probe || c.ProbeConcurrencyMin != 2 ||
		c.ProbeConcurrencyMax != 8 || c.ProbeRate != 5.5 || c.ProbeTimeout != 2*time.Second {
		t.Errorf("config %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	// What children get parses back to the same settings.
	fs2 := flag.NewFlagSet("child", flag.ContinueOnError)
	c2 := DefaultConfig()
	c2.RegisterFlags(fs2)
	if err := fs2.Parse(ForwardArgs(fs)); err != nil {
		t.Fatalf("forwarded args %q: %v", ForwardArgs(fs), err)
	}
	if !slices.Equal(c2.ProbePorts, c.ProbePorts) || c2.ProbeTarget != c.ProbeTarget || c2.ProbeBanner != c.ProbeBanner || !slices.Equal(c2.ProbeAllow, c.ProbeAllow) {
		t.Errorf("child config %+v, want the parent's probe settings", c2)
	}

	for _, bad := range [][]string{
		{"--probe-ports=0"}, {"--probe-ports=70000"}, {"--probe-ports=80,80"}, {"--probe-ports=http"},
		{"--probe-target=example.com:7"}, {"--probe-target=127.0.0.1"},
		{"--probe-allow=10.0.0.0/33"}, {"--probe-allow=somewhere"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c := DefaultConfig()
		c.RegisterFlags(fs)
		if err := fs.Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDecodeBanner(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "",
		"plain":               "plain",
		`a\r\nb`:              "a\r\nb",
		`\x00\xff\t`:          "\x00\xff\t",
		`é and "quotes"`:      `é and "quotes"`,
		`\u00e9 is two bytes`: "é is two bytes",
	} {
		got, err := decodeBanner(in)
		if err != nil || string(got) != want {
			t.Errorf("decodeBanner(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := decodeBanner(`bad \q`); err == nil {
		t.Error("a bad escape was accepted")
	}
}

// countingServer listens on 127.0.0.1 at a port the OS chose, counts
// connections, and sends banner (if any) to each before closing it.
type countingServer struct {
	ap       netip.AddrPort
	accepted atomic.Int64
}

func startCountingServer(t *testing.T, banner []byte) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &countingServer{ap: ln.Addr().(*net.TCPAddr).AddrPort()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			_, _ = c.Write(banner)
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

// startMicrosocks runs microsocks, a real SOCKS5 proxy, on 127.0.0.1 at a
// free port (skipping the test if it is not installed) and stops it when
// the test ends.
func startMicrosocks(t *testing.T) uint16 {
	t.Helper()
	bin, err := exec.LookPath("microsocks")
	if err != nil {
		t.Skipf("microsocks is not installed (make deps installs it): %v", err)
	}
	for range 3 {
		// A port free a moment ago; if another process takes it before
		// microsocks binds, microsocks exits and another port is tried.
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()

		logPath := filepath.Join(t.TempDir(), "microsocks.log")
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-i", "127.0.0.1", "-p", strconv.Itoa(int(port)))
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatalf("start microsocks: %v", err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		t.Cleanup(func() {
			select {
			case <-exited:
			default:
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
			}
			logFile.Close()
			if t.Failed() {
				out, _ := os.ReadFile(logPath)
				t.Logf("microsocks output:\n%s", out)
			}
		})
		if listening(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), exited) {
			return port
		}
	}
	t.Fatal("microsocks did not start")
	return 0
}

// listening waits until ap accepts connections; false if the process
// exited first.
func listening(t *testing.T, ap netip.AddrPort, exited <-chan struct{}) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp4", ap.String(), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("never listened on %s: %v", ap, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// batchOf sends one batch of addrs.
func (s *session) batchOf(id uint64, term int64, addrs ...string) {
	s.t.Helper()
	var raw []byte
	for _, a := range addrs {
		raw = columns.AppendAddr(raw, netip.MustParseAddr(a))
	}
	if err := s.s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: &styxv1.Batch{
		BatchId: id, Term: term, Attempt: 1, Addresses: raw,
	}}}); err != nil {
		s.t.Fatal(err)
	}
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestProbeFindsOpenProxy runs a worker with --probe against a real
// SOCKS5 proxy (microsocks) on loopback.
func TestProbeFindsOpenProxy(t *testing.T) {
	socksPort := startMicrosocks(t)
	target := startCountingServer(t, []byte("styx-worker-probe-target\n"))
	_, cli := startEtcd(t)

	cfg := testConfig(cli)
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Probe = true
	cfg.ProbePorts = []uint16{socksPort}
	cfg.ProbeTarget = target.ap
	cfg.ProbeBanner = `styx-worker-probe-target\n` // decoded: the newline is part of it
	cfg.ProbeAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.ProbeTimeout = 5 * time.Second
	r := startWorker(t, cfg)

	s, _ := openSession(t, dial(t, r.w.Addr()), 1)
	// 127.0.0.1: microsocks. 127.0.0.2: nothing listens on that port.
	// 192.0.2.1: outside the allow-list, so the guard refuses it before
	// anything is dialed.
	s.batchOf(1, 1, "127.0.0.1", "127.0.0.2", "192.0.2.1")
	res := s.recv().GetResult()
	vs := verdictsOf(t, res)
	if res.GetBatchId() != 1 || len(vs) != 3 {
		t.Fatalf("result %v, want 3 verdicts for batch 1", res)
	}
	want := "proxyprobe:SOCKS5:" + strconv.Itoa(int(socksPort))
	if v := vs[0]; !v.GetProxy() || v.GetType() != "SOCKS5" || v.GetPort() != uint32(socksPort) || v.GetRisk() != 100 ||
		!slices.Contains(v.GetEvidence(), want) || v.GetModelVersion() != "nop" || v.GetError() != "" {
		t.Errorf("verdict for 127.0.0.1: %v, want a SOCKS5 proxy on port %d with evidence %q, made by nop", v, socksPort, want)
	}
	for _, v := range vs[1:] {
		if v.GetProxy() || v.GetType() != "" || v.GetPort() != 0 || len(v.GetEvidence()) != 0 {
			t.Errorf("verdict %v, want no proxy and no evidence", v)
		}
	}
	if target.accepted.Load() == 0 {
		t.Error("the target saw no connection: the proxy was not made to reach it")
	}

	m := metricsText(t, r.w.MetricsAddr())
	for _, line := range []string{
		"styx_worker_probes_total 2",
		`styx_worker_probe_proxies_total{type="SOCKS5"} 1`,
		`styx_worker_probe_proxies_total{type="HTTP"} 0`,
		`styx_worker_probes_skipped_total{reason="denied"} 1`,
		`styx_worker_probes_skipped_total{reason="busy"} 0`,
		`styx_worker_probe_errors_total{kind="failed"} 0`,
		"styx_worker_probe_concurrency_limit 4",
	} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	r.stop(t)
}

// TestProbeOffByDefault runs a worker with every probe setting but
// --probe: nothing is dialed.
func TestProbeOffByDefault(t *testing.T) {
	port := startCountingServer(t, nil) // where a probe would knock
	target := startCountingServer(t, []byte("banner\n"))
	_, cli := startEtcd(t)

	cfg := testConfig(cli)
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.ProbePorts = []uint16{port.ap.Port()}
	cfg.ProbeTarget = target.ap
	cfg.ProbeAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	r := startWorker(t, cfg)

	s, _ := openSession(t, dial(t, r.w.Addr()), 1)
	s.batchOf(1, 1, "127.0.0.1")
	v := verdictsOf(t, s.recv().GetResult())
	if len(v) != 1 || v[0].GetProxy() || len(v[0].GetEvidence()) != 0 {
		t.Fatalf("verdicts %v, want one, no proxy, no evidence", v)
	}
	// The verdict is made synchronously: a probe would have dialed by now.
	if n, m := port.accepted.Load(), target.accepted.Load(); n != 0 || m != 0 {
		t.Errorf("%d connections to the probed port and %d to the target, want none", n, m)
	}
	if m := metricsText(t, r.w.MetricsAddr()); strings.Contains(m, "styx_worker_probe") {
		t.Error("/metrics has probe metrics although the probe is off")
	}
	r.stop(t)
}
