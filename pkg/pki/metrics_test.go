package pki_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

func expectMetrics(expiry, reloads, errs string) string {
	return `
# HELP styx_worker_certificate_expiry_seconds Seconds until this process's certificate expires (renew it before; it reloads live).
# TYPE styx_worker_certificate_expiry_seconds gauge
styx_worker_certificate_expiry_seconds ` + expiry + `
# HELP styx_worker_certificate_reload_errors_total Changed identity files that were refused (the previous certificate stays in use).
# TYPE styx_worker_certificate_reload_errors_total counter
styx_worker_certificate_reload_errors_total ` + errs + `
# HELP styx_worker_certificate_reloads_total Renewed certificates or CAs picked up without a restart.
# TYPE styx_worker_certificate_reloads_total counter
styx_worker_certificate_reloads_total ` + reloads + `
`
}

func TestMetrics(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Worker, "w1")
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(src.NotAfter().Add(-1000 * time.Second))
	src.SetClock(clk.Now)
	reg := prometheus.NewPedanticRegistry()
	if err := src.Register(reg, "styx_worker"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expectMetrics("1000", "0", "0"))); err != nil {
		t.Fatal(err)
	}
	// Expiry counts down with the clock, and goes negative once expired.
	clk.Add(1500 * time.Second)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expectMetrics("-500", "0", "0"))); err != nil {
		t.Fatal(err)
	}

	// A refused change and a renewal are counted; the gauge follows the
	// renewed certificate.
	writeFile(t, filepath.Join(dir, pki.CertFile), []byte("junk"))
	clk.Add(pki.ReloadCheck)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expectMetrics("-501", "0", "1"))); err != nil {
		t.Fatal(err)
	}
	p.Renew(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: 48 * time.Hour, Now: clk.Now()})
	clk.Add(pki.ReloadCheck)
	// Renewed at a whole second for 48 hours, a second ago.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expectMetrics("172799", "1", "1"))); err != nil {
		t.Fatal(err)
	}

	// One Source, one set of names per registry.
	if err := src.Register(reg, "styx_worker"); err == nil {
		t.Error("registered twice under one prefix")
	}
	if err := src.Register(reg, "styx_other"); err != nil {
		t.Errorf("a second prefix: %v", err)
	}
}
