package locdbtest

import (
	"os"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
)

// OpenInstalled opens the installed database (locdb.DefaultPath, from
// Debian's libloc-database) for a test that needs real data, closing it at
// cleanup. The test is skipped when the file is missing.
func OpenInstalled(tb testing.TB) *locdb.DB {
	tb.Helper()
	if _, err := os.Stat(locdb.DefaultPath); err != nil {
		tb.Skip("no location database at", locdb.DefaultPath)
	}
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
