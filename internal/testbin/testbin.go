// Package testbin finds the programs `make deps` builds into bin/ for
// the tests (FerretDB, etcd).
package testbin

import (
	"fmt"
	"os"
	"path/filepath"
)

// Find returns $env when it is set, otherwise bin/name in the working
// directory or the nearest directory above it; hint says how to get it.
func Find(name, env, hint string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("bin/%s not found: %s", name, hint)
		}
		dir = parent
	}
}
