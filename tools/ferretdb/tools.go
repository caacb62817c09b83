//go:build tools

// Package tools pins FerretDB, the MongoDB-compatible server (SQLite
// handler) that the data cleanup tests run; `make deps` builds it into
// bin/ferretdb from the module proxy.
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
