// Package browsertest starts a real headless Chromium for browser tests of
// STYX's web pages, driven through chromedp.
//
// The browser is Debian's chromium (installed by `make deps`). When no
// browser is installed a test is skipped, unless STYX_REQUIRE_BROWSER=1 (as
// `make test` sets it), in which case it fails. The browser is confined to
// loopback: every host name other than localhost resolves to nothing, and
// Chromium's own background traffic (updates, safe browsing, sync) is off.
//
// Screenshots go to STYX_ARTIFACT_DIR when it is set (`make test` sets it to
// artifacts/ in the repository), else to the test's temporary directory.
package browsertest
