//go:build tools

// Package tools pins the etcd server the tests run (`make deps` builds
// bin/etcd from it, from the module proxy, as bin/ferretdb is built).
package tools

import _ "go.etcd.io/etcd/server/v3"
