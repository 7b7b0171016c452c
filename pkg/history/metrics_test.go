package history_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/styx-inference/styx/pkg/history"
)

// The collector reports what Sizes says: here three addresses in two /24
// buckets of one AS, one evicted by the bound of two.
func TestCollector(t *testing.T) {
	tb := history.New(history.Config{MaxAddrs: 2, Locate: func(netip.Addr) uint32 { return 64500 }})
	for _, a := range []string{"203.0.113.1", "203.0.113.2", "198.51.100.1"} {
		tb.AddVerdict(netip.MustParseAddr(a), false, 1)
	}
	want := `
# HELP styx_test_history_addresses Addresses in the history table.
# TYPE styx_test_history_addresses gauge
styx_test_history_addresses 2
# HELP styx_test_history_ases ASes in the history table.
# TYPE styx_test_history_ases gauge
styx_test_history_ases 1
# HELP styx_test_history_buckets IPv4 /24 and IPv6 /48 buckets in the history table.
# TYPE styx_test_history_buckets gauge
styx_test_history_buckets 2
# HELP styx_test_history_evicted_total Addresses dropped from the full history table.
# TYPE styx_test_history_evicted_total counter
styx_test_history_evicted_total 1
`
	if err := testutil.CollectAndCompare(history.NewCollector(tb, "styx_test"), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
