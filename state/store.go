package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/text/width"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names. Index keys are "<prefix>\x00<8-byte ticket number>" so that
// a reverse cursor walks newest first.
var (
	bMeta        = []byte("meta")
	bTickets     = []byte("tickets")
	bEvents      = []byte("events")
	bIdxOpen     = []byte("idx_open")
	bIdxFlow     = []byte("idx_flow")
	bIdxReq      = []byte("idx_requester")
	bIdxWait     = []byte("idx_waiting")
	bLocks       = []byte("locks")
	bJobs        = []byte("jobs")
	bJobsActive  = []byte("jobs_active")
	bOutbox      = []byte("outbox")
	bTimers      = []byte("timers")
	bIdem        = []byte("idem")
	bIdemExp     = []byte("idem_exp")
	bAudit       = []byte("audit")
	bAuditTicket = []byte("audit_ticket")
	bAuditUser   = []byte("audit_user")
	bUsers       = []byte("users")
	bUserIDs     = []byte("user_ids")
	bRoleMembers = []byte("role_members")
	bCardRefs    = []byte("card_refs")
	bInbound     = []byte("inbound")
)

// Options configures Open.
type Options struct {
	Path string
	// OpenTimeout bounds the wait for the file lock held by another process.
	OpenTimeout time.Duration
	// ReadOnly opens the file without taking the write lock.
	ReadOnly bool
	// BatchDelay is how long a write waits to be grouped with concurrent
	// writes into one fsync; 0 means 2ms.
	BatchDelay time.Duration
	// Key seals recorded chat input (see LoadKey); without one, a key for
	// this process only is used.
	Key []byte
}

// Store is opsbot's bbolt-backed state.
type Store struct {
	db *bolt.DB
	// nextID hands out ticket numbers without a write transaction; this
	// process holds the file lock, so nobody else allocates.
	nextID atomic.Uint64
	seal   *sealer
}

// Open opens or creates the state file and runs pending schema migrations.
// It fails when the file is locked by another process for longer than
// OpenTimeout, or when the file was written by a newer schema.
func Open(opts Options) (*Store, error) {
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = time.Second
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(opts.Path), 0o750); err != nil {
			return nil, fmt.Errorf("create state directory: %w", err)
		}
	}
	if err := preflight(opts.Path); err != nil {
		return nil, err
	}
	// A large initial mapping spares the writers the stalls of remapping
	// while the file grows (address space only; the file is not grown).
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, ReadOnly: opts.ReadOnly, InitialMmapSize: 256 << 20})
	if err != nil {
		return nil, openError(opts.Path, err)
	}
	if err := check(db); err != nil {
		db.Close()
		return nil, err
	}
	db.MaxBatchDelay = opts.BatchDelay
	if db.MaxBatchDelay <= 0 {
		db.MaxBatchDelay = 2 * time.Millisecond
	}
	seal, err := newSealer(opts.Key)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, seal: seal}
	if opts.ReadOnly {
		err = db.View(func(tx *bolt.Tx) error {
			v, err := schemaVersion(tx)
			if err == nil && v > len(migrations) {
				err = fmt.Errorf("state file has schema %d, this opsbot knows up to %d", v, len(migrations))
			}
			return err
		})
	} else {
		err = s.migrate()
	}
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			s.nextID.Store(tx.Bucket(bTickets).Sequence())
			return nil
		})
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

// migrations are applied in order; the schema version is their count.
var migrations = []func(tx *bolt.Tx) error{
	func(tx *bolt.Tx) error { // 1: the initial buckets
		for _, b := range [][]byte{bMeta, bTickets, bEvents, bIdxOpen, bIdxFlow, bIdxReq, bIdxWait,
			bLocks, bJobs, bJobsActive, bOutbox, bTimers, bIdem, bIdemExp, bAudit, bAuditTicket,
			bAuditUser, bUsers, bUserIDs, bRoleMembers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	func(tx *bolt.Tx) error { // 2: where each ticket's cards were posted, for updates in place
		_, err := tx.CreateBucketIfNotExists(bCardRefs)
		return err
	},
	func(tx *bolt.Tx) error { // 3: chat input acknowledged but not yet handled
		_, err := tx.CreateBucketIfNotExists(bInbound)
		return err
	},
	func(tx *bolt.Tx) error { // 4: the inventory of store clusters and stores
		for _, b := range [][]byte{bClusters, bStores, bClusterIndex} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	func(tx *bolt.Tx) error { // 5: environment freezes (no data cleanup)
		_, err := tx.CreateBucketIfNotExists(bFreezes)
		return err
	},
	func(tx *bolt.Tx) error { // 6: the local chat's history
		_, err := tx.CreateBucketIfNotExists(bChatLog)
		return err
	},
}

// SchemaVersion is the schema this build writes.
func SchemaVersion() int { return len(migrations) }

func schemaVersion(tx *bolt.Tx) (int, error) {
	m := tx.Bucket(bMeta)
	if m == nil {
		return 0, nil
	}
	v := m.Get([]byte("schema"))
	if v == nil {
		return 0, nil
	}
	return strconv.Atoi(string(v))
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		v, err := schemaVersion(tx)
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("state file has schema %d, this opsbot knows up to %d: refusing to downgrade", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if err := migrations[i](tx); err != nil {
				return fmt.Errorf("migrate schema to %d: %w", i+1, err)
			}
		}
		return tx.Bucket(bMeta).Put([]byte("schema"), []byte(strconv.Itoa(len(migrations))))
	})
}

// WriteTo streams a consistent copy of the file.
func (s *Store) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// ParseID returns the number of a ticket id such as "T-42" (or "42").
func ParseID(id string) (uint64, bool) {
	s := width.Fold.String(strings.TrimSpace(id)) // "Ｔ－９" is T-9
	for _, p := range []string{"T-", "t-", "T", "t"} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			s = rest
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// FormatID renders a ticket number as its id.
func FormatID(n uint64) string { return "T-" + strconv.FormatUint(n, 10) }

func idxKey(prefix string, num uint64) []byte {
	k := make([]byte, 0, len(prefix)+9)
	k = append(k, prefix...)
	k = append(k, 0)
	return append(k, u64(num)...)
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func loadTicket(tx *bolt.Tx, num uint64) (Ticket, error) {
	var t Ticket
	ok, err := getJSON(tx.Bucket(bTickets), u64(num), &t)
	if err != nil {
		return t, fmt.Errorf("decode ticket %s: %w", FormatID(num), err)
	}
	if !ok {
		return t, fmt.Errorf("ticket %s: %w", FormatID(num), ErrNotFound)
	}
	return t, nil
}

// Get returns a ticket's projection.
func (s *Store) Get(ctx context.Context, id string) (Ticket, error) {
	num, ok := ParseID(id)
	if !ok {
		return Ticket{}, fmt.Errorf("ticket %q: %w", id, ErrNotFound)
	}
	var t Ticket
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		t, err = loadTicket(tx, num)
		return err
	})
	return t, err
}

// Events returns a ticket's history, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]Event, error) {
	num, ok := ParseID(id)
	if !ok {
		return nil, fmt.Errorf("ticket %q: %w", id, ErrNotFound)
	}
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := u64(num)
		c := tx.Bucket(bEvents).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Create allocates a ticket id and writes the first change, built by fn
// from that id. fn runs outside the write transaction, so rendering and
// encoding never hold the single bbolt writer; a refused change (a lock
// held by another ticket) may leave a gap in the numbering.
func (s *Store) Create(ctx context.Context, fn func(id string) (Change, error)) (Ticket, error) {
	num := s.nextID.Add(1)
	ch, err := fn(FormatID(num))
	if err != nil {
		return Ticket{}, err
	}
	ch.Ticket.ID = FormatID(num)
	pre, err := prepare(0, ch)
	if err != nil {
		return Ticket{}, err
	}
	var out Ticket
	d, in := pendingDelivery(ctx), pendingInbound(ctx)
	err = s.db.Batch(func(tx *bolt.Tx) error {
		if err := recordDelivery(tx, d); err != nil {
			return err
		}
		if err := forgetInbound(tx, in); err != nil {
			return err
		}
		b := tx.Bucket(bTickets)
		if b.Sequence() < num {
			if err := b.SetSequence(num); err != nil {
				return err
			}
		}
		var err error
		out, err = apply(tx, num, nil, ch, pre)
		return err
	})
	settled(err, d, in)
	return out, err
}

// settled marks the delivery key and the input record as written by a
// committed ticket write.
func settled(err error, d *delivery, in *inboundMark) {
	if err != nil {
		return
	}
	if d != nil {
		d.used.Store(true)
	}
	if in != nil {
		in.done.Store(true)
	}
}

// errConflict means the ticket changed between reading it and writing.
var errConflict = errors.New("ticket changed concurrently")

// Transition reads a ticket, lets fn build the change from it, and writes
// the change only if the ticket is still at the version fn saw (optimistic
// concurrency: fn runs outside the write transaction and is called again
// when another writer got there first). fn must not have side effects; its
// errors are returned unchanged. ErrNoChange from fn writes nothing and
// returns the ticket as it is.
func (s *Store) Transition(ctx context.Context, id string, fn func(t Ticket) (Change, error)) (Ticket, error) {
	num, ok := ParseID(id)
	if !ok {
		return Ticket{}, fmt.Errorf("ticket %q: %w", id, ErrNotFound)
	}
	for attempt := 0; ; attempt++ {
		var cur Ticket
		var read []byte
		if err := s.db.View(func(tx *bolt.Tx) error {
			var err error
			cur, err = loadTicket(tx, num)
			read = bytes.Clone(tx.Bucket(bTickets).Get(u64(num)))
			return err
		}); err != nil {
			return Ticket{}, err
		}
		ch, err := fn(cur)
		if errors.Is(err, ErrNoChange) {
			return cur, nil
		}
		if err != nil {
			return Ticket{}, err
		}
		ch.Ticket.ID = cur.ID
		// Encoded here, outside the single writer: the transaction only
		// compares and puts bytes.
		pre, err := prepare(cur.Version, ch)
		if err != nil {
			return Ticket{}, err
		}
		var out Ticket
		d, in := pendingDelivery(ctx), pendingInbound(ctx)
		err = s.db.Batch(func(tx *bolt.Tx) error {
			// Any change rewrites the ticket, so the same bytes mean the
			// ticket is still at the version fn saw.
			if !bytes.Equal(tx.Bucket(bTickets).Get(u64(num)), read) {
				return errConflict
			}
			if err := recordDelivery(tx, d); err != nil {
				return err
			}
			if err := forgetInbound(tx, in); err != nil {
				return err
			}
			out, err = apply(tx, num, &cur, ch, pre)
			return err
		})
		if errors.Is(err, errConflict) && attempt < 100 {
			continue
		}
		settled(err, d, in)
		return out, err
	}
}

// prepared is a change encoded before its transaction: the ticket at its
// new version, its event, and the outbox and audit entries with a zero
// sequence number that the transaction fills in (seqJSON).
type prepared struct {
	ticket Ticket
	raw    []byte
	event  []byte
	notify [][]byte
	audit  [][]byte
}

// prepare encodes ch as written over a ticket at version prev.
func prepare(prev int64, ch Change) (*prepared, error) {
	p := &prepared{ticket: ch.Ticket}
	p.ticket.Version = prev
	var err error
	if ch.Event.Type != "" {
		p.ticket.Version = prev + 1
		ch.Event.Seq = p.ticket.Version
		if p.event, err = json.Marshal(ch.Event); err != nil {
			return nil, err
		}
	}
	if p.raw, err = json.Marshal(p.ticket); err != nil {
		return nil, err
	}
	for _, n := range ch.Notify {
		n.ID = 0
		raw, err := json.Marshal(n)
		if err != nil {
			return nil, err
		}
		p.notify = append(p.notify, raw)
	}
	for _, a := range ch.Audit {
		a.Seq, a.User = 0, NormName(a.User)
		raw, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		p.audit = append(p.audit, raw)
	}
	return p, nil
}

// seqJSON puts seq into an entry encoded with a zero sequence number as
// its first field ({"id":0,... or {"seq":0,...}).
func seqJSON(raw []byte, field string, seq uint64) ([]byte, error) {
	prefix := `{"` + field + `":0,`
	if !bytes.HasPrefix(raw, []byte(prefix)) {
		return nil, fmt.Errorf("state: %s is not the first field of the encoded entry", field)
	}
	out := make([]byte, 0, len(raw)+20)
	out = append(out, `{"`+field+`":`...)
	out = strconv.AppendUint(out, seq, 10)
	return append(out, raw[len(prefix)-1:]...), nil
}

// apply writes a change encoded by prepare. old is nil for a new ticket.
func apply(tx *bolt.Tx, num uint64, old *Ticket, ch Change, pre *prepared) (Ticket, error) {
	t := pre.ticket
	if pre.event != nil {
		ek := append(u64(num), u64(uint64(t.Version))...)
		if err := tx.Bucket(bEvents).Put(ek, pre.event); err != nil {
			return t, err
		}
	}
	// Locks: refuse a resource held by another ticket.
	locks := tx.Bucket(bLocks)
	for _, r := range ch.Acquire {
		if h := locks.Get([]byte(r)); h != nil && string(h) != t.ID {
			return t, &LockedError{Resource: r, Holder: string(h)}
		}
		if err := locks.Put([]byte(r), []byte(t.ID)); err != nil {
			return t, err
		}
	}
	for _, r := range ch.Release {
		if h := locks.Get([]byte(r)); h != nil && string(h) == t.ID {
			if err := locks.Delete([]byte(r)); err != nil {
				return t, err
			}
		}
	}
	if err := reindex(tx, num, old, &t); err != nil {
		return t, err
	}
	if err := tx.Bucket(bTickets).Put(u64(num), pre.raw); err != nil {
		return t, err
	}
	for _, j := range ch.Jobs {
		if err := putJob(tx, j); err != nil {
			return t, err
		}
	}
	for _, id := range ch.CancelJobs {
		var j Job
		ok, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
		if err != nil {
			return t, err
		}
		if ok && j.Active() {
			if j.Status == JobQueued {
				j.Status = JobCancelled
			} else {
				j.CancelRequested = true
			}
			if err := putJob(tx, j); err != nil {
				return t, err
			}
		}
	}
	for _, raw := range pre.notify {
		b := tx.Bucket(bOutbox)
		id, err := b.NextSequence()
		if err != nil {
			return t, err
		}
		v, err := seqJSON(raw, "id", id)
		if err != nil {
			return t, err
		}
		if err := b.Put(u64(id), v); err != nil {
			return t, err
		}
	}
	for _, tm := range ch.ClearTimers {
		if err := tx.Bucket(bTimers).Delete(timerKey(tm)); err != nil {
			return t, err
		}
	}
	for _, tm := range ch.SetTimers {
		if err := putJSON(tx.Bucket(bTimers), timerKey(tm), tm); err != nil {
			return t, err
		}
	}
	for i, raw := range pre.audit {
		if err := putAudit(tx, ch.Audit[i].Ticket, NormName(ch.Audit[i].User), raw); err != nil {
			return t, err
		}
	}
	return t, nil
}

func reindex(tx *bolt.Tx, num uint64, old, t *Ticket) error {
	type idx struct {
		b        []byte
		old, new []string
	}
	var oldOpen, oldFlow, oldReq, oldWait []string
	if old != nil {
		if old.Open {
			oldOpen = []string{""}
		}
		oldFlow, oldReq, oldWait = []string{old.Flow}, []string{old.Requester}, old.WaitingRoles
	}
	var newOpen []string
	if t.Open {
		newOpen = []string{""}
	}
	for _, ix := range []idx{
		{bIdxOpen, oldOpen, newOpen},
		{bIdxFlow, oldFlow, []string{t.Flow}},
		{bIdxReq, oldReq, []string{t.Requester}},
		{bIdxWait, oldWait, t.WaitingRoles},
	} {
		b := tx.Bucket(ix.b)
		for _, p := range ix.old {
			if err := b.Delete(idxKey(p, num)); err != nil {
				return err
			}
		}
		for _, p := range ix.new {
			if err := b.Put(idxKey(p, num), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// LockHolder returns the ticket holding a resource, or "".
func (s *Store) LockHolder(ctx context.Context, resource string) (string, error) {
	var h string
	err := s.db.View(func(tx *bolt.Tx) error {
		h = string(tx.Bucket(bLocks).Get([]byte(resource)))
		return nil
	})
	return h, err
}

// Index names a ticket index for List.
type Index struct {
	// Kind is "open", "flow", "requester" or "waiting".
	Kind string
	// Keys are the flow names, requesters or roles to merge; ignored for "open".
	Keys []string
}

// ListPage is one page of tickets, newest first.
type ListPage struct {
	Tickets []Ticket
	More    bool
}

// List walks an index newest first, merging its keys, and returns the
// tickets for which keep returns true, skipping the first offset of them.
// It reads only the index entries it needs, never the whole ticket bucket.
func (s *Store) List(ctx context.Context, ix Index, keep func(Ticket) bool, offset, limit int) (ListPage, error) {
	var page ListPage
	var bucket []byte
	keys := ix.Keys
	switch ix.Kind {
	case "open":
		bucket, keys = bIdxOpen, []string{""}
	case "flow":
		bucket = bIdxFlow
	case "requester":
		bucket = bIdxReq
	case "waiting":
		bucket = bIdxWait
	case "all":
		bucket = bTickets
	default:
		return page, fmt.Errorf("unknown index %q", ix.Kind)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		var next func() (uint64, bool)
		if ix.Kind == "all" {
			next = descNumbers(tx.Bucket(bucket))
		} else {
			next = mergeDesc(tx.Bucket(bucket), keys)
		}
		skipped := 0
		for {
			num, ok := next()
			if !ok {
				return nil
			}
			t, err := loadTicket(tx, num)
			if err != nil {
				return err
			}
			if keep != nil && !keep(t) {
				continue
			}
			if skipped < offset {
				skipped++
				continue
			}
			if len(page.Tickets) == limit {
				page.More = true
				return nil
			}
			page.Tickets = append(page.Tickets, t)
		}
	})
	return page, err
}

// descNumbers walks a bucket keyed by 8-byte numbers, highest first.
func descNumbers(b *bolt.Bucket) func() (uint64, bool) {
	c := b.Cursor()
	k, _ := c.Last()
	return func() (uint64, bool) {
		if k == nil {
			return 0, false
		}
		n := binary.BigEndian.Uint64(k)
		k, _ = c.Prev()
		return n, true
	}
}

// mergeDesc merges the index entries of several prefixes, highest ticket
// number first, without duplicates.
func mergeDesc(b *bolt.Bucket, prefixes []string) func() (uint64, bool) {
	heads := make([]*cursorHead, 0, len(prefixes))
	for _, p := range prefixes {
		h := &cursorHead{c: b.Cursor(), prefix: append([]byte(p), 0)}
		// Seek past the prefix's last key, then step back.
		end := append(append([]byte{}, h.prefix...), bytes.Repeat([]byte{0xff}, 9)...)
		k, _ := h.c.Seek(end)
		if k == nil {
			k, _ = h.c.Last()
		} else {
			k, _ = h.c.Prev()
		}
		h.settle(k)
		heads = append(heads, h)
	}
	var last uint64
	return func() (uint64, bool) {
		for {
			var best *cursorHead
			for _, h := range heads {
				if h.ok && (best == nil || h.num > best.num) {
					best = h
				}
			}
			if best == nil {
				return 0, false
			}
			n := best.num
			k, _ := best.c.Prev()
			best.settle(k)
			if n == last {
				continue
			}
			last = n
			return n, true
		}
	}
}

type cursorHead struct {
	c      *bolt.Cursor
	prefix []byte
	num    uint64
	ok     bool
}

// settle moves the head to the next well-formed key of its prefix at or
// before k. Keys that share the prefix but are not "<prefix><8 bytes>"
// (another name that starts with this one and a NUL, a key written by a
// damaged or older build) are skipped, not taken as the prefix's end.
func (h *cursorHead) settle(k []byte) {
	for k != nil && bytes.HasPrefix(k, h.prefix) && len(k) != len(h.prefix)+8 {
		k, _ = h.c.Prev()
	}
	h.ok = k != nil && len(k) == len(h.prefix)+8 && bytes.HasPrefix(k, h.prefix)
	if h.ok {
		h.num = binary.BigEndian.Uint64(k[len(h.prefix):])
	}
}

// Used is the size of the pages in use: what the state takes, without the
// room a file keeps at its end for growth.
func (s *Store) Used() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}
