package proxyprobe_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Every server here listens on 127.0.0.0/8, and the tests dial nothing
// else: the probe's guard allows 127.0.0.0/8 only.

// freePort returns a port that was free on ip a moment ago: bind to port
// 0, read the port, close. A third-party server then binds it.
func freePort(t *testing.T, ip string) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// requireBinary returns the path of a third-party server, or skips the
// test if it is not installed.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (make deps installs tinyproxy, microsocks and dante-server): %v", name, err)
	}
	return path
}

// startServer runs a third-party server on ip at a free port and waits
// until it listens. The command line comes from args(port). If the server
// exits before listening (another process took the port between freePort
// and its bind), it is tried again on another port.
func startServer(t *testing.T, what, ip string, args func(port uint16) []string) uint16 {
	t.Helper()
	bin := requireBinary(t, what)
	for range 3 {
		port := freePort(t, ip)
		p := startProcess(t, bin, args(port)...)
		if waitListening(t, what, netip.AddrPortFrom(netip.MustParseAddr(ip), port), p.done) {
			p.ready.Store(true)
			return port
		}
	}
	t.Fatalf("%s did not start (its output is logged below)", what)
	return 0
}

// proc is a started server process.
type proc struct {
	done  chan struct{} // closed when the process has exited
	ready atomic.Bool   // it listened: exiting before the test ends is an error
}

// startProcess starts a server in its own process group, which is stopped
// in t.Cleanup. Its output goes to a file that is logged if the test fails.
func startProcess(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(path)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", path, err)
	}
	pid := cmd.Process.Pid
	p := &proc{done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// SIGTERM to the whole group (danted forks helpers, and its main
		// process reaps them), SIGKILL if it lingers. The group is
		// signalled only while its leader is not reaped yet, so its id
		// belongs to no one else.
		select {
		case <-p.done:
			if p.ready.Load() {
				t.Errorf("%s exited before the test ended", path)
			}
		default:
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				<-p.done
			}
		}
		logFile.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("%s %v output:\n%s", path, args, out)
		}
	})
	return p
}

// waitListening waits until ap accepts connections, and reports false if
// the process exits first.
func waitListening(t *testing.T, what string, ap netip.AddrPort, exited <-chan struct{}) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Logf("%s exited before listening on %s", what, ap)
			return false
		default:
		}
		c, err := net.DialTimeout("tcp4", ap.String(), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened on %s: %v", what, ap, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startTinyproxy runs tinyproxy, an HTTP CONNECT proxy, in the foreground
// on ip. With no ConnectPort line it tunnels to any port.
func startTinyproxy(t *testing.T, ip string) uint16 {
	t.Helper()
	return startServer(t, "tinyproxy", ip, func(port uint16) []string {
		conf := writeFile(t, "tinyproxy.conf", fmt.Sprintf(`Listen %s
Port %d
Timeout 30
MaxClients 64
Allow 127.0.0.0/8
DisableViaHeader Yes
LogLevel Info
`, ip, port))
		return []string{"-d", "-c", conf}
	})
}

// startMicrosocks runs microsocks, a SOCKS5 proxy, on ip.
func startMicrosocks(t *testing.T, ip string) uint16 {
	t.Helper()
	return startServer(t, "microsocks", ip, func(port uint16) []string {
		return []string{"-i", ip, "-p", strconv.Itoa(int(port))}
	})
}

// startDante runs Dante's danted, a SOCKS4 and SOCKS5 proxy, on 127.0.0.1
// (it listens only on an address an interface has). With socks4Only it
// refuses SOCKS5 requests.
func startDante(t *testing.T, socks4Only bool) uint16 {
	t.Helper()
	const ip = "127.0.0.1"
	users := ""
	if os.Geteuid() == 0 {
		users = "user.privileged: root\nuser.unprivileged: nobody\n"
	}
	protocols := ""
	if socks4Only {
		protocols = "  proxyprotocol: socks_v4\n"
	}
	return startServer(t, "danted", ip, func(port uint16) []string {
		conf := writeFile(t, "danted.conf", fmt.Sprintf(`logoutput: stderr
internal: %[1]s port = %[2]d
external: %[1]s
clientmethod: none
socksmethod: none
%[3]sclient pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.0/8
  command: connect
%[4]s}
socks block {
  from: 0.0.0.0/0 to: 0.0.0.0/0
}
`, ip, port, users, protocols))
		return []string{"-f", conf, "-N", "1", "-p", filepath.Join(filepath.Dir(conf), "danted.pid")}
	})
}

// server is an in-test TCP server on 127.0.0.x that runs handle for each
// connection and counts them. Cleanup closes the listener and every
// connection, and waits for the handlers.
type server struct {
	port     uint16
	accepted atomic.Int64
}

func serve(t *testing.T, ip string, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// startTarget is the host the prober controls: it sends banner to every
// connection, then closes it.
func startTarget(t *testing.T, ip string, banner []byte) netip.AddrPort {
	s := serve(t, ip, func(c net.Conn) { _, _ = c.Write(banner) })
	return netip.AddrPortFrom(netip.MustParseAddr(ip), s.port)
}

// Non-proxy handlers.

func closeAtOnce(net.Conn) {}

func sendGarbage(c net.Conn) {
	_, _ = c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage, not a proxy \xff\xfe\x00\x5a\x05\x00"))
}

func neverAnswer(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// liarHTTP answers 200 to CONNECT but tunnels nowhere.
func liarHTTP(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	_, _ = c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\nwelcome to the honeypot\n"))
}

// liarSOCKS5 grants every SOCKS5 CONNECT but tunnels nowhere.
func liarSOCKS5(c net.Conn) {
	buf := make([]byte, 64)
	if _, err := io.ReadFull(c, buf[:3]); err != nil {
		return
	}
	_, _ = c.Write([]byte{5, 0})
	if _, err := io.ReadFull(c, buf[:10]); err != nil {
		return
	}
	_, _ = c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 80})
	_, _ = c.Write([]byte("welcome to the honeypot\n"))
}

// liarSOCKS4 grants every SOCKS4 request but tunnels nowhere.
func liarSOCKS4(c net.Conn) {
	_, _ = c.Write([]byte{0, 0x5A, 0, 80, 127, 0, 0, 1})
	_, _ = c.Write([]byte("welcome to the honeypot\n"))
	_, _ = io.Copy(io.Discard, c)
}

// serveHTTP runs a real net/http server on ip whose every answer,
// CONNECT included, has the given status.
func serveHTTP(t *testing.T, ip string, status int) *server {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, http.StatusText(status), status)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.accepted.Add(1)
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http server: %v", err)
		}
	})
	return s
}
