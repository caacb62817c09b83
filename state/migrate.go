package state

// Copying a state between backends (opsbot migrate, backups of etcd):
// both backends export their keys in the same order (tables by name,
// then keys in byte order), so a copy is a merge of two ordered streams.
// It writes only what differs, so a copy cut short is finished by running
// it again, and the same merge with nothing to write is the check that
// two states are identical, record by record.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"opsbot/state/kv"

	bolt "go.etcd.io/bbolt"
)

// SyncStats counts what a sync found: records equal on both sides, and
// those it added, changed or removed in the target (or would have).
type SyncStats struct {
	Same, Added, Changed, Removed int
	// First names the first record that differed, for a person to look at.
	First string
}

// Differs reports whether the two states were not identical.
func (s SyncStats) Differs() bool { return s.Added+s.Changed+s.Removed > 0 }

// MigrationKey marks a target as the copy of a source: it names the
// source, so a copy cut short is resumed only from the same source. Sync
// leaves it out of the comparison.
const MigrationKey = "meta/migration"

// Sync makes dst hold exactly the records of src. With write false it
// changes nothing and reports the differences. Writes go in transactions
// within kv.MaxOps; neither side may be in use meanwhile.
func Sync(ctx context.Context, src, dst kv.DB, write bool) (SyncStats, error) {
	var st SyncStats
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	theirs := make(chan kv.KV, 1024)
	errc := make(chan error, 1)
	go func() {
		defer close(theirs)
		errc <- dst.Export(ctx, func(k string, v []byte) error {
			select {
			case theirs <- kv.KV{Key: k, Value: bytes.Clone(v)}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// Writes go to the target from several goroutines: each key is in one
	// batch only, so they never conflict, and a cluster's round trips
	// overlap.
	const writers = 8
	batches := make(chan []kv.KV, writers)
	var werr error
	var wmu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < writers && write; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				err := dst.Update(ctx, func(tx kv.Txn) error {
					for _, x := range b {
						var err error
						if x.Value == nil {
							err = tx.Delete(x.Key)
						} else {
							err = tx.Put(x.Key, x.Value)
						}
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					wmu.Lock()
					if werr == nil {
						werr = err
						cancel()
					}
					wmu.Unlock()
				}
			}
		}()
	}
	var batch []kv.KV // a nil Value deletes
	flush := func() error {
		if !write || len(batch) == 0 {
			batch = batch[:0]
			return nil
		}
		select {
		case batches <- batch:
		case <-ctx.Done():
			return ctx.Err()
		}
		batch = nil
		return nil
	}
	differ := func(k string, v []byte, n *int) error {
		*n++
		if st.First == "" {
			st.First = fmt.Sprintf("%q", k)
		}
		batch = append(batch, kv.KV{Key: k, Value: v})
		if len(batch) == kv.MaxOps {
			return flush()
		}
		return nil
	}
	next, ok := <-theirs
	err := src.Export(ctx, func(k string, v []byte) error {
		if k == MigrationKey {
			return nil
		}
		// Records only the target has, before this one, go.
		for ok && next.Key < k {
			if next.Key != MigrationKey {
				if err := differ(next.Key, nil, &st.Removed); err != nil {
					return err
				}
			}
			next, ok = <-theirs
		}
		switch {
		case ok && next.Key == k:
			if bytes.Equal(next.Value, v) {
				st.Same++
			} else if err := differ(k, nonNil(v), &st.Changed); err != nil {
				return err
			}
			next, ok = <-theirs
			return nil
		default:
			return differ(k, nonNil(v), &st.Added)
		}
	})
	for err == nil && ok {
		if next.Key != MigrationKey {
			err = differ(next.Key, nil, &st.Removed)
		}
		next, ok = <-theirs
	}
	if err == nil {
		err = flush()
	}
	close(batches)
	wg.Wait()
	if werr != nil {
		err = werr
	}
	cancel()
	for range theirs {
	}
	if derr := <-errc; err == nil && derr != nil && !errors.Is(derr, context.Canceled) {
		err = derr
	}
	return st, err
}

func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// Copy writes every record of src into a new bbolt state file at path
// (which must not exist) and returns how many it wrote. The file is a
// state like any: Verify checks it, Open uses it.
func Copy(ctx context.Context, src kv.DB, path string) (int, error) {
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("copy to %s: %w", path, ErrExists)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return 0, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	// One sync at the end, not one a batch: a copy cut short is no state.
	db.NoSync = true
	dst := kv.NewBolt(db)
	st, err := Sync(ctx, src, dst, true)
	if err != nil {
		return 0, fmt.Errorf("copy to %s: %w", path, err)
	}
	db.NoSync = false
	// Every table exists in a state file, even one with no record yet.
	err = db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations {
			if err := m(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = db.Sync()
	}
	return st.Added, err
}
