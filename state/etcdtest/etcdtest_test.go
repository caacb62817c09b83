package etcdtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"opsbot/state/etcdtest"
)

// The harness itself: three members answer; a killed leader is replaced
// by another member, writes go on through the client; the killed member,
// started again, catches up with what was written while it was down.
func TestClusterSurvivesItsLeader(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	next, err := c.WaitLeader(ctx)
	if err != nil || next == leader {
		t.Fatalf("after killing %d the leader is %d (%v)\n%s", leader, next, err, c.Logs())
	}
	if _, err := cli.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("write with the leader killed: %v", err)
	}
	c.Restart(leader)
	one := etcdtest.MemberClient(t, c, leader)
	defer one.Close()
	for {
		r, err := one.Get(ctx, "k", etcdtest.Serializable())
		if err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "v2" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the restarted member did not catch up: %v %v\n%s", r, err, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The limits the replicated store must stay inside, measured on this
// etcd with its default settings (docs/etcd.md says how the store keeps
// to them): a request's size, the operations of one transaction, and the
// errors etcd gives past them.
func TestEtcdLimits(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The largest value one Put takes: 1.5 MiB a request, less its framing.
	// (The client refuses to send more than 2 MiB itself.)
	lo, hi := 0, 2<<20-64<<10
	for hi-lo > 1024 {
		mid := (lo + hi) / 2
		if _, err := cli.Put(ctx, "big", strings.Repeat("x", mid)); err == nil {
			lo = mid
		} else if !strings.Contains(err.Error(), "request is too large") {
			t.Fatalf("put %d bytes: %v", mid, err)
		} else {
			hi = mid
		}
	}
	t.Logf("largest value in one put: %d bytes (max-request-bytes 1.5 MiB)", lo)
	if lo < 1<<20 || lo > 3<<19 {
		t.Fatalf("largest put %d bytes: not the 1.5 MiB default", lo)
	}
	// The operations of one transaction: 128.
	txn := func(n int) error {
		ops := make([]clientv3.Op, n)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("op/%04d", i), "v")
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		return err
	}
	if err := txn(128); err != nil {
		t.Fatalf("128 operations in one transaction: %v", err)
	}
	if err := txn(129); err == nil || !strings.Contains(err.Error(), "too many operations in txn request") {
		t.Fatalf("129 operations in one transaction: %v", err)
	}
	t.Log("largest transaction: 128 operations (max-txn-ops)")
}

// The database quota: past it etcd raises the NOSPACE alarm and refuses
// every write (reads still work) until space is freed (compaction,
// defragmentation) and the alarm is disarmed. Measured with a 16 MiB quota
// (the default is 2 GiB, at most 8 GiB suggested).
func TestEtcdQuota(t *testing.T) {
	c := etcdtest.Start(t, 1, "--quota-backend-bytes", fmt.Sprint(16<<20))
	cli := c.Client()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	value := strings.Repeat("x", 512<<10)
	var err error
	written := 0
	for written < 64 {
		if _, err = cli.Put(ctx, fmt.Sprintf("fill/%03d", written), value); err != nil {
			break
		}
		written++
	}
	if err == nil || !strings.Contains(err.Error(), "database space exceeded") {
		t.Fatalf("after %d half-MiB values in a 16 MiB quota: %v", written, err)
	}
	t.Logf("a 16 MiB quota took %d half-MiB values, then: %v", written, err)
	if _, err := cli.Get(ctx, "fill/000"); err != nil {
		t.Fatalf("a read past the quota: %v", err)
	}
}
