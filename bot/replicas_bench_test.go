package bot_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/state/kv"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// payload is the size of a ticket's projection as the store writes it
// (a go-live at its first approval: about 1.4 KiB of JSON).
const payload = 1400

// etcdMetric sums a counter over the members' /metrics (label sets
// added together), or reads it on member only (>= 0).
func etcdMetric(b *testing.B, rs *replicaSet, name string, member int) float64 {
	var total float64
	for i, m := range rs.etcd.Members {
		if member >= 0 && i != member {
			continue
		}
		resp, err := http.Get(m.ClientURL + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
				var v float64
				fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
				total += v
			}
		}
	}
	return total
}

// rawEtcdTxns measures transactions per second on the cluster from 32
// goroutines, each transaction puts keys of total size bytes, like
// the bot's average transaction.
func rawEtcdTxns(b *testing.B, cli *clientv3.Client, d time.Duration, puts, bytes int) float64 {
	puts = max(puts, 1)
	val := strings.Repeat("x", max(bytes/puts, 1))
	var n atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("bench/raw/%d/%d", w, i)
				ops := make([]clientv3.Op, puts)
				for p := range ops {
					ops[p] = clientv3.OpPut(fmt.Sprintf("%s/%d", k, p), val)
				}
				if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).Then(ops...).Commit(); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// rawBoltWrites measures bbolt's batched single-put transactions per
// second (the store's 2 ms batch delay) from 32 goroutines.
func rawBoltWrites(b *testing.B, d time.Duration) float64 {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchDelay = 2 * time.Millisecond
	kvdb := kv.NewBolt(db)
	val := make([]byte, payload)
	var n atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if kvdb.Update(ctx, func(tx kv.Txn) error { return tx.Put(fmt.Sprintf("raw/%d/%d", w, i), val) }) == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// openTickets opens n go-lives (hotfix: bob's approval is next) through
// the processes' local APIs, 32 at a time.
func openTickets(b testing.TB, procs []*proc, n int) []string {
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				id, err := newTicket(procs[i%len(procs)], "alice", fmt.Sprintf(`/ops new golive service=b%05d version=v1 rollback_app=redeploy hotfix=true`, i))
				if err != nil {
					failed.Store(err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return ids
}

// approveOn is bob's approval of id on p; its latency.
func approveOn(p *proc, id string) (time.Duration, error) {
	start := time.Now()
	msgs, err := p.try("bob", "/ops approve "+id)
	if err == nil && (len(msgs) == 0 || !strings.Contains(msgs[0].Title, id+" approve")) {
		err = fmt.Errorf("%s: %+v", id, msgs)
	}
	return time.Since(start), err
}

// closedLoop approves ids from 32 clients spread over procs and returns
// approvals per second.
func closedLoop(b *testing.B, procs []*proc, ids []string) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var errs atomic.Int64
	start := time.Now()
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(ids); i = int(next.Add(1)) - 1 {
				if _, err := approveOn(procs[i%len(procs)], ids[i]); err != nil {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if errs.Load() > 0 {
		b.Fatalf("%d approvals failed", errs.Load())
	}
	return float64(len(ids)) / time.Since(start).Seconds()
}

// fixedRate approves ids at rate per second over procs and returns the
// latencies' p50 and p99.
func fixedRate(b *testing.B, procs []*proc, ids []string, rate int) (time.Duration, time.Duration) {
	lat := make([]time.Duration, len(ids))
	var wg sync.WaitGroup
	var errs atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i, id := range ids {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := approveOn(procs[i%len(procs)], id)
			if err != nil {
				errs.Add(1)
			}
			lat[i] = d
		}()
	}
	wg.Wait()
	if errs.Load() > 0 {
		b.Fatalf("%d approvals failed at %d/s", errs.Load(), rate)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// BenchmarkReplicas is issue 16's benchmark, in one run: the raw etcd
// transaction rate, approvals through two replicas on etcd and their
// ratio, p99 at 200 approvals/s, failover over 10 kills of the leading
// replica, and the same figures for one bot on bbolt. Run it with
// -benchtime 1x (make bench does).
func BenchmarkReplicas(b *testing.B) {
	const closed, rate, fixed = 3000, 200, 2000
	rs := startReplicas(b, 2, "")
	cli := rs.etcd.Client()
	defer cli.Close()
	rawSingle := rawEtcdTxns(b, cli, 5*time.Second, 1, payload)
	rawBolt := rawBoltWrites(b, 5*time.Second)

	ids := openTickets(b, rs.procs, closed+fixed)
	// What the bot's transactions carry, from etcd's own counters over
	// the closed loop: puts per transaction, bytes clients sent per
	// transaction (member 0 applies every transaction once).
	txns0, puts0 := etcdMetric(b, rs, "etcd_mvcc_txn_total", 0), etcdMetric(b, rs, "etcd_mvcc_put_total", 0)
	bytes0 := etcdMetric(b, rs, "etcd_network_client_grpc_received_bytes_total", -1)
	etcdRate := closedLoop(b, rs.procs, ids[:closed])
	txns := etcdMetric(b, rs, "etcd_mvcc_txn_total", 0) - txns0
	putsPer := (etcdMetric(b, rs, "etcd_mvcc_put_total", 0) - puts0) / txns
	bytesPer := (etcdMetric(b, rs, "etcd_network_client_grpc_received_bytes_total", -1) - bytes0) / txns
	rawEtcd := rawEtcdTxns(b, cli, 5*time.Second, int(putsPer+0.5), int(bytesPer))
	etcdP50, etcdP99 := fixedRate(b, rs.procs, ids[closed:], rate)

	// Failover: kill the leading replica, time until the other leads;
	// start the killed one again for the next round.
	var fail []time.Duration
	for round := 0; round < 10; round++ {
		var leader int
		deadline := time.Now().Add(30 * time.Second)
		for leader = rs.leader(); leader < 0; leader = rs.leader() {
			if time.Now().After(deadline) {
				b.Fatalf("no leader\n%s", rs.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		killed := time.Now()
		rs.kill(leader)
		survivor := rs.procs[1-leader]
		for health(survivor)["leader"] != true {
			if time.Since(killed) > 30*time.Second {
				b.Fatalf("no failover after 30s\n%s", rs.logs())
			}
			time.Sleep(10 * time.Millisecond)
		}
		fail = append(fail, time.Since(killed))
		rs.start(leader)
	}
	slices.Sort(fail)

	// One bot on bbolt, the same load, with the replicas and etcd stopped.
	for i := range rs.procs {
		rs.kill(i)
	}
	for i := range rs.etcd.Members {
		rs.etcd.Kill(i)
	}
	dir := b.TempDir()
	bottest.WriteScripts(b, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	y := strings.Replace(bottest.ConfigYAML(dir, ""), "listen: 127.0.0.1:0", "listen: "+freePort(b), 1)
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		b.Fatal(err)
	}
	single := &proc{t: b, logs: &bottest.SyncBuffer{}}
	single.cmd = exec.Command(rs.bin, "run", "-config", cfg)
	single.cmd.Stdout, single.cmd.Stderr = single.logs, single.logs
	single.start(cfg)
	boltIDs := openTickets(b, []*proc{single}, closed+fixed)
	boltRate := closedLoop(b, []*proc{single}, boltIDs[:closed])
	boltP50, boltP99 := fixedRate(b, []*proc{single}, boltIDs[closed:], rate)

	b.ReportMetric(etcdRate, "approvals/s")
	b.ReportMetric(etcdRate/rawEtcd, "ratio")
	b.ReportMetric(float64(etcdP99.Microseconds())/1000, "p99-ms@200/s")
	b.ReportMetric(float64(fail[len(fail)/2].Milliseconds()), "failover-p50-ms")
	b.Logf("\n"+
		"the bot's etcd transactions over the closed loop: %.0f (%.2f a approval), %.1f puts and %.0f bytes sent each\n"+
		"raw etcd transactions (3 members, 1 put of %d B, 32 goroutines): %8.0f txn/s\n"+
		"raw etcd transactions like the bot's (%.0f puts, %.0f B):          %8.0f txn/s\n"+
		"raw bbolt batched writes (same payload, 32 goroutines):           %8.0f writes/s\n"+
		"approvals end to end, 2 replicas on etcd (32 clients):            %8.0f approvals/s  ratio to raw etcd like the bot's %.2f\n"+
		"approvals end to end, 1 bot on bbolt (32 clients):                %8.0f approvals/s  ratio to raw bbolt %.2f\n"+
		"at %d approvals/s for %ds: 2 replicas on etcd p50 %s p99 %s; 1 bot on bbolt p50 %s p99 %s\n"+
		"failover over 10 kills of the leading replica (lease TTL %s): p50 %s p99 %s (min %s, max %s)",
		txns, txns/float64(closed), putsPer, bytesPer, payload, rawSingle, putsPer, bytesPer, rawEtcd, rawBolt, etcdRate, etcdRate/rawEtcd, boltRate, boltRate/rawBolt,
		rate, fixed/rate, etcdP50.Round(10*time.Microsecond), etcdP99.Round(10*time.Microsecond), boltP50.Round(10*time.Microsecond), boltP99.Round(10*time.Microsecond),
		leaseTTL, fail[len(fail)/2].Round(time.Millisecond), fail[len(fail)*99/100].Round(time.Millisecond), fail[0].Round(time.Millisecond), fail[len(fail)-1].Round(time.Millisecond))
}
