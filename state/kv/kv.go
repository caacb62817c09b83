// Package kv is the key/value transaction interface the store's domain
// logic is to be written over (issue 16), with two backends: bbolt, the
// embedded default, and etcd, for several replicas. Both give the same
// guarantees and the same limits, checked by one conformance suite:
//
//   - Update is serializable: the keys and ranges a transaction read are
//     checked when it commits, and it runs again when another writer
//     changed them (optimistic; fn must have no side effects).
//   - A key is "table/rest": the table names what the key is (tickets,
//     events, an index); a range's prefix names its table. bbolt keeps a
//     table as a bucket, etcd under the installation's prefix.
//   - Range returns keys in byte order, after a key, up to a limit;
//     RangeRev in reverse, before a key.
//   - A transaction writes at most MaxOps keys and reads within MaxOps
//     checks; a value is at most MaxValue bytes. Past either, the
//     transaction fails with ErrTooLarge and writes nothing: etcd's own
//     limits (128 operations, 1.5 MiB a request) are kept on both, so code
//     that works on bbolt works on etcd.
package kv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Limits every backend enforces (see docs/etcd.md for etcd's own).
const (
	// MaxOps bounds a transaction's writes plus the reads it checks at
	// commit (etcd: 128 operations a transaction, compares included).
	MaxOps = 128
	// MaxValue bounds one value (etcd: 1.5 MiB a request).
	MaxValue = 1 << 20
	// MaxRetries bounds how often Update runs fn again on conflict.
	MaxRetries = 100
)

// ErrTooLarge says a transaction or a value is past the limits.
var ErrTooLarge = errors.New("kv: transaction too large")

// ErrReadOnly says a View tried to write.
var ErrReadOnly = errors.New("kv: write in a read-only transaction")

// ErrBadKey says a key or a range prefix names no table ("table/...").
var ErrBadKey = errors.New(`kv: a key is "table/rest"`)

// ErrConflict says Update gave up after MaxRetries conflicts.
var ErrConflict = errors.New("kv: too many conflicting writers")

// KV is one key and its value.
type KV struct {
	Key   string
	Value []byte
}

// Txn reads and writes inside a transaction. Reads see the transaction's
// own writes.
type Txn interface {
	// Get returns a key's value; ok is false when it is absent.
	Get(key string) (value []byte, ok bool, err error)
	// Range returns the keys with prefix that sort after after ("" for
	// the first), in order, at most limit of them (0: no limit).
	Range(prefix, after string, limit int) ([]KV, error)
	// RangeRev returns the keys with prefix that sort before before (""
	// for the last), in reverse order, at most limit of them.
	RangeRev(prefix, before string, limit int) ([]KV, error)
	Put(key string, value []byte) error
	Delete(key string) error
}

// DB is a key/value store.
type DB interface {
	// View runs fn on a consistent snapshot.
	View(ctx context.Context, fn func(Txn) error) error
	// Update runs fn in a serializable transaction and commits its
	// writes; fn runs again if what it read changed meanwhile.
	Update(ctx context.Context, fn func(Txn) error) error
	// Export calls fn for every key, table by table in key order, from
	// one consistent snapshot.
	Export(ctx context.Context, fn func(key string, value []byte) error) error
	Close() error
}

// Table returns the table of a key or range prefix ("tickets" of
// "tickets/\x00..."), and the rest.
func Table(key string) (table, rest string, err error) {
	table, rest, ok := strings.Cut(key, "/")
	if !ok || table == "" {
		return "", "", fmt.Errorf("%w, not %q", ErrBadKey, clip(key))
	}
	return table, rest, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// prefixEnd is the first key after every key with prefix ("" when none).
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// writes is a transaction's buffered writes, in order; a nil value is a
// delete.
type writes struct {
	order []string
	vals  map[string][]byte
	dels  map[string]bool
}

func (w *writes) put(key string, value []byte) error {
	if len(value) > MaxValue {
		return ErrTooLarge
	}
	if w.vals == nil {
		w.vals, w.dels = map[string][]byte{}, map[string]bool{}
	}
	if _, seen := w.vals[key]; !seen && !w.dels[key] {
		w.order = append(w.order, key)
	}
	w.vals[key] = append([]byte(nil), value...)
	delete(w.dels, key)
	return nil
}

func (w *writes) del(key string) {
	if w.vals == nil {
		w.vals, w.dels = map[string][]byte{}, map[string]bool{}
	}
	if _, seen := w.vals[key]; !seen && !w.dels[key] {
		w.order = append(w.order, key)
	}
	delete(w.vals, key)
	w.dels[key] = true
}

// buffered is the part of a transaction that holds its writes until the
// commit; it implements Txn's Put and Delete for every backend.
type buffered struct {
	write bool
	w     writes
}

func (b *buffered) Put(key string, value []byte) error {
	if !b.write {
		return ErrReadOnly
	}
	if _, _, err := Table(key); err != nil {
		return err
	}
	return b.w.put(key, value)
}

func (b *buffered) Delete(key string) error {
	if !b.write {
		return ErrReadOnly
	}
	if _, _, err := Table(key); err != nil {
		return err
	}
	b.w.del(key)
	return nil
}

// get answers from the buffered writes: found says the transaction wrote
// (or deleted) the key.
func (w *writes) get(key string) (value []byte, ok, found bool) {
	if v, ok := w.vals[key]; ok {
		return v, true, true
	}
	if w.dels[key] {
		return nil, false, true
	}
	return nil, false, false
}

// overlay merges the buffered writes under prefix into a range read:
// keys after after, or with rev keys before before, in reverse.
func (w *writes) overlay(in []KV, prefix, after string, limit int) []KV {
	return w.merge(in, prefix, func(k string) bool { return k > after }, limit, false)
}

func (w *writes) overlayRev(in []KV, prefix, before string, limit int) []KV {
	return w.merge(in, prefix, func(k string) bool { return before == "" || k < before }, limit, true)
}

func (w *writes) merge(in []KV, prefix string, inside func(string) bool, limit int, rev bool) []KV {
	if len(w.order) == 0 {
		return in
	}
	m := map[string][]byte{}
	for _, kv := range in {
		m[kv.Key] = kv.Value
	}
	for _, k := range w.order {
		if !strings.HasPrefix(k, prefix) || !inside(k) {
			continue
		}
		if w.dels[k] {
			delete(m, k)
		} else {
			m[k] = w.vals[k]
		}
	}
	out := make([]KV, 0, len(m))
	for k, v := range m {
		out = append(out, KV{Key: k, Value: v})
	}
	sortKVs(out)
	if rev {
		slices.Reverse(out)
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func sortKVs(kvs []KV) {
	slices.SortFunc(kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
}
