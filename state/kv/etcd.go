package kv

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is the replicated backend: every key under a prefix of one etcd
// cluster (several installations can share a cluster).
type Etcd struct {
	cli    *clientv3.Client
	prefix string
}

// NewEtcd uses cli, keeping every key under prefix (e.g. "opsbot/").
func NewEtcd(cli *clientv3.Client, prefix string) *Etcd { return &Etcd{cli: cli, prefix: prefix} }

// Close closes nothing: the client belongs to the caller.
func (e *Etcd) Close() error { return nil }

// View implements DB: every read at one revision.
func (e *Etcd) View(ctx context.Context, fn func(Txn) error) error {
	return fn(&etcdTxn{e: e, ctx: ctx})
}

// Update implements DB: fn's reads are made at one revision and recorded;
// the commit is an etcd transaction that checks each key read still has
// the revision it had (0: still absent) and each range read gained no key
// and lost none, then writes. A changed read runs fn again.
func (e *Etcd) Update(ctx context.Context, fn func(Txn) error) error {
	for attempt := 0; attempt < MaxRetries; attempt++ {
		t := &etcdTxn{e: e, ctx: ctx, buffered: buffered{write: true}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.w.order) == 0 {
			return nil // read only
		}
		cmps := t.compares()
		if len(cmps)+len(t.w.order) > MaxOps {
			return ErrTooLarge
		}
		ops := make([]clientv3.Op, 0, len(t.w.order))
		for _, k := range t.w.order {
			if t.w.dels[k] {
				ops = append(ops, clientv3.OpDelete(e.prefix+k))
			} else {
				ops = append(ops, clientv3.OpPut(e.prefix+k, string(t.w.vals[k])))
			}
		}
		resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("kv: commit: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return ErrConflict
}

// read is a key read and the revision it had (0: absent).
type read struct {
	key string
	rev int64
}

// rangeRead is a range read: its bounds and what it returned.
type rangeRead struct {
	from, end string
	keys      []read
}

type etcdTxn struct {
	buffered
	e      *Etcd
	ctx    context.Context
	rev    int64 // the snapshot every read is made at (0 until the first)
	reads  []read
	ranges []rangeRead
}

func (t *etcdTxn) opts(more ...clientv3.OpOption) []clientv3.OpOption {
	if t.rev > 0 {
		more = append(more, clientv3.WithRev(t.rev))
	}
	return more
}

func (t *etcdTxn) Get(key string) ([]byte, bool, error) {
	if v, ok, found := t.w.get(key); found {
		return v, ok, nil
	}
	if _, _, err := Table(key); err != nil {
		return nil, false, err
	}
	resp, err := t.e.cli.Get(t.ctx, t.e.prefix+key, t.opts()...)
	if err != nil {
		return nil, false, fmt.Errorf("kv: get %s: %w", key, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	r := read{key: key}
	var v []byte
	if len(resp.Kvs) == 1 {
		r.rev, v = resp.Kvs[0].ModRevision, resp.Kvs[0].Value
	}
	t.reads = append(t.reads, r)
	return v, len(resp.Kvs) == 1, nil
}

func (t *etcdTxn) Range(prefix, after string, limit int) ([]KV, error) {
	return t.scan(prefix, after, limit, false)
}

func (t *etcdTxn) RangeRev(prefix, before string, limit int) ([]KV, error) {
	return t.scan(prefix, before, limit, true)
}

// scan reads the keys with prefix after bound (forward) or before it
// (rev; "" is no bound) at the snapshot, records what it read for the
// commit's checks, and lays the transaction's writes over it.
func (t *etcdTxn) scan(prefix, bound string, limit int, rev bool) ([]KV, error) {
	if _, _, err := Table(prefix); err != nil {
		return nil, err
	}
	from, end := prefix, prefixEnd(prefix)
	order := clientv3.SortAscend
	if !rev && bound >= prefix {
		from = bound + "\x00"
	}
	if rev {
		order = clientv3.SortDescend
		if bound != "" && (end == "" || bound < end) {
			end = bound
		}
	}
	want := int64(limit)
	if want > 0 {
		want += int64(len(t.w.order)) // writes may hide some
	}
	opts := []clientv3.OpOption{clientv3.WithRange(t.e.rangeEnd(end)), clientv3.WithSort(clientv3.SortByKey, order)}
	if want > 0 {
		opts = append(opts, clientv3.WithLimit(want))
	}
	resp, err := t.e.cli.Get(t.ctx, t.e.prefix+from, t.opts(opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kv: range %s: %w", prefix, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	rr := rangeRead{from: from, end: end}
	out := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := string(kv.Key[len(t.e.prefix):])
		out = append(out, KV{Key: k, Value: kv.Value})
		rr.keys = append(rr.keys, read{key: k, rev: kv.ModRevision})
	}
	if want > 0 && resp.More && len(out) > 0 {
		// Only the part read counts: a key past the last one returned
		// does not change what this transaction saw.
		if last := out[len(out)-1].Key; rev {
			rr.from = last
		} else {
			rr.end = last + "\x00"
		}
	}
	t.ranges = append(t.ranges, rr)
	if rev {
		return t.w.overlayRev(out, prefix, bound, limit), nil
	}
	return t.w.overlay(out, prefix, bound, limit), nil
}

// Export implements DB: every key of the installation at one revision,
// read a page at a time. A page's range ends with its table: etcd counts
// every key of a range for each page it returns, so paging the whole
// installation in one range would cost the square of its size.
func (e *Etcd) Export(ctx context.Context, fn func(key string, value []byte) error) error {
	const pageSize = 2000
	all := prefixEnd(e.prefix)
	from, end := e.prefix, all
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := e.cli.Get(ctx, from, opts...)
		if err != nil {
			return fmt.Errorf("kv: export: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(string(kv.Key[len(e.prefix):]), kv.Value); err != nil {
				return err
			}
		}
		switch {
		case resp.More && len(resp.Kvs) > 0:
			// On in this table.
			last := string(resp.Kvs[len(resp.Kvs)-1].Key)
			from, end = last+"\x00", e.tableEnd(last)
		case end == all:
			return nil
		default:
			// This table is done: on to the next, whichever it is.
			from, end = end, all
		}
	}
}

// tableEnd is the etcd key after every key of full's table.
func (e *Etcd) tableEnd(full string) string {
	table, _, err := Table(full[len(e.prefix):])
	if err != nil {
		return prefixEnd(e.prefix)
	}
	return e.prefix + prefixEnd(table+"/")
}

// rangeEnd is the etcd range end of a key range ending at end ("": to the
// end of this installation's keys).
func (e *Etcd) rangeEnd(end string) string {
	if end == "" {
		return prefixEnd(e.prefix)
	}
	return e.prefix + end
}

// compares are the checks of what the transaction read: each key still at
// its revision (absent: created revision 0), each range with no key
// changed or added since the snapshot and none of its keys gone.
func (t *etcdTxn) compares() []clientv3.Cmp {
	var out []clientv3.Cmp
	seen := map[string]bool{}
	for _, r := range t.reads {
		if !seen[r.key] {
			seen[r.key] = true
			out = append(out, clientv3.Compare(clientv3.ModRevision(t.e.prefix+r.key), "=", r.rev))
		}
	}
	for _, rr := range t.ranges {
		// No key in the range changed or appeared after the snapshot...
		out = append(out, clientv3.Compare(clientv3.ModRevision(t.e.prefix+rr.from).WithRange(t.e.rangeEnd(rr.end)), "<", t.rev+1))
		// ...and none of the keys read is gone.
		for _, r := range rr.keys {
			out = append(out, clientv3.Compare(clientv3.ModRevision(t.e.prefix+r.key), "=", r.rev))
		}
	}
	return out
}
