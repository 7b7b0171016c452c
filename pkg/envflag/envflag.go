// Package envflag lets every flag be set from the environment: for a flag
// named "listen-addr" and prefix "STYX", STYX_LISTEN_ADDR fills it unless the
// flag was given on the command line, which always wins.
package envflag

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name returns the environment variable for a flag.
func Name(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return Apply(fs, prefix, os.LookupEnv)
}

// Apply fills unset flags from lookup.
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		env := Name(prefix, f.Name)
		if v, ok := lookup(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// Usage returns a flag.Usage function that prints a synopsis, the flags and
// a note about environment overrides.
func Usage(fs *flag.FlagSet, prefix, synopsis string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n\nFlags (each may also be set as %s_<FLAG>, upper case, '-' as '_'; the command line wins):\n", strings.TrimSpace(synopsis), prefix)
		fs.PrintDefaults()
	}
}
