package state_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/state"
	"opsbot/state/etcdtest"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// sharedEtcd is a real three-member etcd cluster for the package's tests
// (TestMain starts it); each store on it has a key prefix of its own.
var sharedEtcd *etcdtest.Cluster

// opener opens a new, empty store on one backend.
type opener func(t testing.TB) *state.Store

// backends runs a test against every backend: one suite, every backend.
func backends(t *testing.T, test func(t *testing.T, open opener)) {
	t.Run("bbolt", func(t *testing.T) { test(t, openBolt) })
	t.Run("etcd", func(t *testing.T) { test(t, openEtcd) })
}

func openBolt(t testing.TB) *state.Store {
	t.Helper()
	s, err := state.Open(state.Options{Path: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var prefixes atomic.Int64

// newPrefix is a key prefix no other store in this run uses.
func newPrefix() string { return fmt.Sprintf("test%d/", prefixes.Add(1)) }

func openEtcd(t testing.TB) *state.Store {
	t.Helper()
	return openEtcdAt(t, newPrefix())
}

// openEtcdAt opens the store under prefix with a client of its own: a
// second call with the same prefix is a second replica of one state.
func openEtcdAt(t testing.TB, prefix string) *state.Store {
	t.Helper()
	if sharedEtcd == nil {
		t.Fatal("no etcd cluster: run `make deps` (builds bin/etcd)")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: sharedEtcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := state.OpenEtcd(ctx, cli, state.EtcdOptions{Prefix: prefix, Key: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
