package browsertest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

func TestPageLoadsAndScreenshot(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>t</title><p id="p">hello</p><script>document.getElementById("p").textContent += " from script"</script>`)
	}))
	defer srv.Close()
	ctx := New(t)
	var text string
	Run(t, ctx, 30*time.Second,
		chromedp.Navigate(srv.URL),
		chromedp.Text("#p", &text, chromedp.ByQuery),
	)
	if text != "hello from script" {
		t.Fatalf("text = %q", text)
	}
	path := Screenshot(t, ctx, "browsertest-selftest")
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		t.Fatalf("screenshot missing: %v", err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG: starts %q", path, b[:min(8, len(b))])
	}
}
