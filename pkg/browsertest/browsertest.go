package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Candidates are the browser executables looked for, in order.
var Candidates = []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"}

// ExecPath returns the browser executable to use: $STYX_BROWSER if set, else
// the first of Candidates found on $PATH.
func ExecPath() (string, bool) {
	if p := os.Getenv("STYX_BROWSER"); p != "" {
		return p, true
	}
	for _, c := range Candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, true
		}
	}
	return "", false
}

// New starts a headless browser for t and returns a context for chromedp
// actions in its first tab. The browser is stopped when t ends. Each action
// run on the context should carry its own timeout (see Run).
func New(t testing.TB) context.Context {
	t.Helper()
	path, ok := ExecPath()
	if !ok {
		if os.Getenv("STYX_REQUIRE_BROWSER") == "1" {
			t.Fatalf("no browser found (looked for %s); install Debian's chromium (make deps)", strings.Join(Candidates, ", "))
		}
		t.Skipf("no browser found (looked for %s); set STYX_REQUIRE_BROWSER=1 to fail instead", strings.Join(Candidates, ", "))
	}
	// Not t.TempDir: Chromium's helper processes may still write to the
	// profile for a moment after the browser exits, which fails the
	// test's own cleanup; the directory is removed with retries instead.
	profile, err := os.MkdirTemp("", "styx-browser-")
	if err != nil {
		t.Fatalf("browser profile dir: %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests may run as root in containers
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("proxy-server", "direct://"),
		// Nothing but loopback resolves: a page that tried to fetch an
		// outside asset would fail visibly instead of leaving the machine.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1400, 900),
		chromedp.UserDataDir(profile),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc() // waits for the browser process to exit
		removeProfile(t, profile)
	})
	// Start the browser now so that a broken installation fails here. The
	// first Run must get the tab's own context: the browser lives as long
	// as the context it was started with.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start browser %s: %v", path, err)
	}
	return ctx
}

// removeProfile removes the browser's profile directory, retrying while
// the browser's last helper processes finish writing to it.
func removeProfile(t testing.TB, dir string) {
	var err error
	for range 50 {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("browser profile %s not removed: %v", dir, err)
}

// Run runs actions on the browser with a timeout and fails t on error.
func Run(t testing.TB, ctx context.Context, timeout time.Duration, actions ...chromedp.Action) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Run(rctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// ArtifactDir is where screenshots go: $STYX_ARTIFACT_DIR, created if
// needed, else a temporary directory of t.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("STYX_ARTIFACT_DIR")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact dir: %v", err)
	}
	return dir
}

// Screenshot saves a full-page PNG of the current page as name.png in
// ArtifactDir and returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	var buf []byte
	// Quality 100 is what makes chromedp capture PNG; anything lower is JPEG.
	Run(t, ctx, 30*time.Second, chromedp.FullScreenshot(&buf, 100))
	path := filepath.Join(ArtifactDir(t), name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
