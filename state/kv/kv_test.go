package kv_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/state/etcdtest"
	"opsbot/state/kv"
)

// backends runs a test against every backend: one suite, every backend.
func backends(t *testing.T, test func(t *testing.T, db kv.DB)) {
	t.Run("bbolt", func(t *testing.T) {
		db, err := kv.OpenBolt(filepath.Join(t.TempDir(), "kv.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		test(t, db)
	})
	t.Run("etcd", func(t *testing.T) {
		c := etcdtest.Start(t, 3)
		cli := c.Client()
		defer cli.Close()
		// Another installation's keys on the same cluster stay apart.
		if _, err := cli.Put(context.Background(), "other/t/a", "not ours"); err != nil {
			t.Fatal(err)
		}
		test(t, kv.NewEtcd(cli, "opsbot/"))
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPutGetDeleteRange(t *testing.T) {
	backends(t, func(t *testing.T, db kv.DB) {
		c := ctx(t)
		err := db.Update(c, func(tx kv.Txn) error {
			for _, k := range []string{"t/3", "t/1", "t/2", "u/1", "s/9"} {
				if err := tx.Put(k, []byte("v"+k)); err != nil {
					return err
				}
			}
			// The transaction reads its own writes.
			if v, ok, err := tx.Get("t/2"); err != nil || !ok || string(v) != "vt/2" {
				return fmt.Errorf("own write: %q %v %v", v, ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		keys := func(kvs []kv.KV) string {
			var out []string
			for _, x := range kvs {
				out = append(out, x.Key)
			}
			return strings.Join(out, ",")
		}
		err = db.View(c, func(tx kv.Txn) error {
			all, err := tx.Range("t/", "", 0)
			if err != nil || keys(all) != "t/1,t/2,t/3" {
				return fmt.Errorf("range t/: %s %v", keys(all), err)
			}
			page, err := tx.Range("t/", "t/1", 1)
			if err != nil || keys(page) != "t/2" || string(page[0].Value) != "vt/2" {
				return fmt.Errorf("page after t/1: %s %v", keys(page), err)
			}
			if _, ok, err := tx.Get("t/9"); ok || err != nil {
				return fmt.Errorf("absent key: %v %v", ok, err)
			}
			if _, ok, err := tx.Get("t/a"); ok || err != nil {
				return fmt.Errorf("another installation's key: %v %v", ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(c, func(tx kv.Txn) error {
			if err := tx.Delete("t/2"); err != nil {
				return err
			}
			// A range in the transaction sees the delete and a new key.
			if err := tx.Put("t/4", []byte("v4")); err != nil {
				return err
			}
			got, err := tx.Range("t/", "", 2)
			if err != nil || keys(got) != "t/1,t/3" {
				return fmt.Errorf("range over own writes: %s %v", keys(got), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = db.View(c, func(tx kv.Txn) error {
			all, _ := tx.Range("t/", "", 0)
			if keys(all) != "t/1,t/3,t/4" {
				t.Errorf("after the delete: %s", keys(all))
			}
			return nil
		})
		// In reverse, from the end or before a key, with the
		// transaction's own writes.
		err = db.Update(c, func(tx kv.Txn) error {
			all, err := tx.RangeRev("t/", "", 0)
			if err != nil || keys(all) != "t/4,t/3,t/1" {
				return fmt.Errorf("reverse range: %s %v", keys(all), err)
			}
			page, err := tx.RangeRev("t/", "t/4", 1)
			if err != nil || keys(page) != "t/3" {
				return fmt.Errorf("reverse page before t/4: %s %v", keys(page), err)
			}
			if err := tx.Put("t/35", []byte("x")); err != nil {
				return err
			}
			if err := tx.Delete("t/3"); err != nil {
				return err
			}
			page, err = tx.RangeRev("t/", "t/4", 2)
			if err != nil || keys(page) != "t/35,t/1" {
				return fmt.Errorf("reverse over own writes: %s %v", keys(page), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// A key names its table.
		err = db.Update(c, func(tx kv.Txn) error { return tx.Put("untabled", []byte("x")) })
		if !errors.Is(err, kv.ErrBadKey) {
			t.Fatalf("a key without a table: %v", err)
		}
		// Export gives every key of this installation, tables in order.
		var exported []string
		if err := db.Export(c, func(k string, v []byte) error {
			exported = append(exported, k+"="+string(v))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(exported, ","); got != "s/9=vs/9,t/1=vt/1,t/35=x,t/4=v4,u/1=vu/1" {
			t.Fatalf("export: %s", got)
		}
	})
}

// Concurrent read-modify-write transactions lose no update: each reads a
// counter and writes it plus one.
func TestNoLostUpdates(t *testing.T) {
	backends(t, func(t *testing.T, db kv.DB) {
		c := ctx(t)
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					err := db.Update(c, func(tx kv.Txn) error {
						v, _, err := tx.Get("c/counter")
						if err != nil {
							return err
						}
						n, _ := strconv.Atoi(string(v))
						return tx.Put("c/counter", []byte(strconv.Itoa(n+1)))
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		_ = db.View(c, func(tx kv.Txn) error {
			v, _, _ := tx.Get("c/counter")
			if string(v) != strconv.Itoa(workers*each) {
				t.Fatalf("counter %s, want %d", v, workers*each)
			}
			return nil
		})
	})
}

// A decision made on an empty range holds: of several transactions that
// each take a lock only when no one holds one, exactly one succeeds.
func TestRangeReadsAreChecked(t *testing.T) {
	backends(t, func(t *testing.T, db kv.DB) {
		c := ctx(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				took := false
				err := db.Update(c, func(tx kv.Txn) error {
					took = false
					held, err := tx.Range("lock/", "", 1)
					if err != nil || len(held) > 0 {
						return err
					}
					took = true
					return tx.Put(fmt.Sprintf("lock/%d", w), []byte("held"))
				})
				if err != nil {
					t.Error(err)
				}
				if took {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d transactions took the lock, want 1", won)
		}
	})
}

// The limits hold on every backend alike: past them nothing is written.
func TestLimits(t *testing.T) {
	backends(t, func(t *testing.T, db kv.DB) {
		c := ctx(t)
		err := db.Update(c, func(tx kv.Txn) error {
			for i := 0; i <= kv.MaxOps; i++ {
				if err := tx.Put(fmt.Sprintf("many/%04d", i), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		})
		if !errors.Is(err, kv.ErrTooLarge) {
			t.Fatalf("%d writes in one transaction: %v", kv.MaxOps+1, err)
		}
		err = db.Update(c, func(tx kv.Txn) error { return tx.Put("t/big", make([]byte, kv.MaxValue+1)) })
		if !errors.Is(err, kv.ErrTooLarge) {
			t.Fatalf("a value of %d bytes: %v", kv.MaxValue+1, err)
		}
		_ = db.View(c, func(tx kv.Txn) error {
			if got, _ := tx.Range("many/", "", 0); len(got) != 0 {
				t.Fatalf("a refused transaction wrote %d keys", len(got))
			}
			return nil
		})
		// At the limit it works.
		err = db.Update(c, func(tx kv.Txn) error {
			for i := 0; i < kv.MaxOps; i++ {
				if err := tx.Put(fmt.Sprintf("many/%04d", i), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%d writes: %v", kv.MaxOps, err)
		}
	})
}

// Two replicas drawing numbers from one sequence at once: every number is
// handed out once; each replica's numbers increase; the counter is written
// once a block; a replica that stops leaves its block's rest unused.
func TestSequenceIsUniqueAcrossReplicas(t *testing.T) {
	backends(t, func(t *testing.T, db kv.DB) {
		c := ctx(t)
		const block, workers, each = 10, 4, 25
		replicas := []*kv.Sequence{kv.NewSequence(db, "seq/tickets", block), kv.NewSequence(db, "seq/tickets", block)}
		var mu sync.Mutex
		seen := map[uint64]int{}
		var wg sync.WaitGroup
		for r, seq := range replicas {
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var last uint64
					for i := 0; i < each; i++ {
						n, err := seq.Next(c)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						seen[n]++
						mu.Unlock()
						if n <= last {
							t.Errorf("replica %d handed out %d after %d", r, n, last)
						}
						last = n
					}
				}()
			}
		}
		wg.Wait()
		if len(seen) != 2*workers*each {
			t.Fatalf("%d distinct numbers for %d draws", len(seen), 2*workers*each)
		}
		for n, k := range seen {
			if k != 1 {
				t.Fatalf("%d handed out %d times", n, k)
			}
		}
		var counter string
		_ = db.View(c, func(tx kv.Txn) error {
			v, _, _ := tx.Get("seq/tickets")
			counter = string(v)
			return nil
		})
		// 200 draws in blocks of 10: 20 blocks reserved, the counter at 200.
		if counter != "200" {
			t.Fatalf("counter %s after 200 draws in blocks of %d", counter, block)
		}
		// One more draw reserves 201-210; a replica started after that one
		// stopped goes on from 211: a gap, never a reuse.
		n, _ := replicas[0].Next(c)
		again, _ := kv.NewSequence(db, "seq/tickets", block).Next(c)
		if n != 201 || again != 211 {
			t.Fatalf("after a stop: %d then %d, want 201 then 211", n, again)
		}
	})
}
