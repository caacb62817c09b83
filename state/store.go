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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"opsbot/state/kv"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Tables (bbolt buckets; on etcd, key prefixes). Index keys are
// "<prefix>\x00<8-byte ticket number>" so that a reverse range walks
// newest first.
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
	// Bulk skips the fsync of each commit, for filling a new file (opsbot
	// migrate); Flush makes it durable. Never for a bot's own state.
	Bulk bool
}

// Store is opsbot's state: the domain logic over a key/value store, a
// bbolt file (one host) or etcd (replicas).
type Store struct {
	db kv.DB
	// bolt is the file on the bbolt backend (nil on etcd).
	bolt *bolt.DB
	// etcd is the client on the etcd backend (nil on bbolt).
	etcd   *clientv3.Client
	prefix string
	// On bbolt, nextID hands out ticket numbers without a write
	// transaction: this process holds the file lock, so nobody else
	// allocates. On etcd, seqs hand out numbers in blocks (see kv.Sequence).
	nextID atomic.Uint64
	seqs   map[string]*kv.Sequence
	seal   *sealer
	// cal is the calendar as last read, with the version it was read at
	// (see ReadCalendar).
	calMu sync.Mutex
	cal   *Calendar
	calAt string
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
	db.NoSync = opts.Bulk
	seal, err := newSealer(opts.Key)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: kv.NewBolt(db), bolt: db, seal: seal}
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
		var n uint64
		n, err = s.counter(context.Background(), "tickets")
		s.nextID.Store(n)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// EtcdOptions configures OpenEtcd.
type EtcdOptions struct {
	// Prefix keeps this installation's keys apart ("opsbot/").
	Prefix string
	// Key seals recorded chat input; every replica needs the same one.
	Key []byte
	// Block is how many ticket numbers a replica reserves at a time; 0
	// means 16. Outbox, audit and inbound numbers come in blocks of 1024.
	Block uint64
	// OrderedAudit numbers audit entries one at a time inside their
	// transaction, so their sequence is the order they were committed in
	// and has no gaps: what an audit stream or webhooks read in order
	// need. It costs concurrency: every audited write touches one key.
	OrderedAudit bool
}

// OpenEtcd opens the state kept in an etcd cluster under a prefix: it
// writes the schema on an empty prefix and refuses one written by a newer
// opsbot. The client stays its caller's.
func OpenEtcd(ctx context.Context, cli *clientv3.Client, opts EtcdOptions) (*Store, error) {
	if opts.Prefix == "" || !strings.HasSuffix(opts.Prefix, "/") {
		return nil, fmt.Errorf("etcd key prefix %q: it must end in '/', e.g. \"opsbot/\"", opts.Prefix)
	}
	seal, err := newSealer(opts.Key)
	if err != nil {
		return nil, err
	}
	if opts.Block == 0 {
		opts.Block = 16
	}
	db := kv.NewEtcd(cli, opts.Prefix)
	s := &Store{db: db, etcd: cli, prefix: opts.Prefix, seal: seal, seqs: map[string]*kv.Sequence{}}
	for _, name := range sequences {
		if name == "audit" && opts.OrderedAudit {
			continue // numbered in the transaction (next)
		}
		// Ticket numbers are read by people: small blocks keep them close
		// to the order they were opened in. The others are many per
		// transition and seen by nobody: large blocks.
		block := opts.Block
		if name != "tickets" {
			block = max(opts.Block, 1024)
		}
		s.seqs[name] = kv.NewSequence(db, seqKey(name), block)
	}
	err = db.Update(ctx, func(tx kv.Txn) error {
		raw, ok, err := tx.Get(metaKey("schema"))
		if err != nil {
			return err
		}
		if ok {
			v, err := strconv.Atoi(string(raw))
			if err != nil {
				return fmt.Errorf("etcd %s: unreadable schema version %q", opts.Prefix, raw)
			}
			if v > len(migrations) {
				return fmt.Errorf("etcd %s has schema %d, this opsbot knows up to %d: refusing to downgrade", opts.Prefix, v, len(migrations))
			}
			// Every earlier schema only added tables, which etcd has no
			// need to create.
			if v == len(migrations) {
				return nil
			}
		}
		return tx.Put(metaKey("schema"), []byte(strconv.Itoa(len(migrations))))
	})
	if err != nil {
		return nil, fmt.Errorf("open the state in etcd: %w", err)
	}
	return s, nil
}

// Flush makes what was written durable (after Options.Bulk writes).
func (s *Store) Flush() error {
	if s.bolt != nil {
		return s.bolt.Sync()
	}
	return nil
}

// Backend names where the state lives: "bbolt" or "etcd".
func (s *Store) Backend() string {
	if s.etcd != nil {
		return "etcd"
	}
	return "bbolt"
}

// KV is the key/value store under the state (for migration and checks).
func (s *Store) KV() kv.DB { return s.db }

// Close closes the file (on etcd, the client stays its owner's).
func (s *Store) Close() error {
	if s.bolt != nil {
		return s.bolt.Close()
	}
	return nil
}

// Path returns the file's path, or where in etcd the state is.
func (s *Store) Path() string {
	if s.bolt != nil {
		return s.bolt.Path()
	}
	return "etcd:" + strings.Join(s.etcd.Endpoints(), ",") + "/" + s.prefix
}

// The sequences a store draws numbers from.
var sequences = []string{"tickets", "outbox", "audit", "inbound"}

func metaKey(name string) string { return "meta/" + name }
func seqKey(name string) string  { return metaKey("seq." + name) }

// counter reads a sequence's last number handed out.
func (s *Store) counter(ctx context.Context, name string) (uint64, error) {
	var n uint64
	err := s.db.View(ctx, func(tx kv.Txn) error {
		var err error
		n, err = readCounter(tx, name)
		return err
	})
	return n, err
}

func readCounter(tx kv.Txn, name string) (uint64, error) {
	raw, ok, err := tx.Get(seqKey(name))
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sequence %s holds %q, not a number", name, raw)
	}
	return n, nil
}

// next hands out a sequence's next number inside tx. With one writer
// (bbolt) the counter is read and written in the transaction; with
// replicas (etcd) it comes from the replica's reserved block, so the
// counter is not one key every write conflicts on.
func (s *Store) next(ctx context.Context, tx kv.Txn, name string) (uint64, error) {
	if seq := s.seqs[name]; seq != nil {
		return seq.Next(ctx)
	}
	n, err := readCounter(tx, name)
	if err != nil {
		return 0, err
	}
	n++
	return n, tx.Put(seqKey(name), []byte(strconv.FormatUint(n, 10)))
}

// newTicketNumber hands out a ticket number before its transaction.
func (s *Store) newTicketNumber(ctx context.Context) (uint64, error) {
	if seq := s.seqs["tickets"]; seq != nil {
		return seq.Next(ctx)
	}
	return s.nextID.Add(1), nil
}

// migrations are applied in order; the schema version is their count.
// They run on the bbolt file only: etcd starts at the current schema.
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
	func(tx *bolt.Tx) error { // 7: sequences as keys (the same on bbolt and etcd), not bucket counters
		for name, b := range map[string][]byte{"tickets": bTickets, "outbox": bOutbox, "audit": bAudit, "inbound": bInbound} {
			if n := tx.Bucket(b).Sequence(); n > 0 {
				if err := tx.Bucket(bMeta).Put([]byte("seq."+name), []byte(strconv.FormatUint(n, 10))); err != nil {
					return err
				}
			}
		}
		return nil
	},
	func(tx *bolt.Tx) error { // 8: each cluster's store count, kept with the index
		counts, err := tx.CreateBucketIfNotExists(bClusterCount)
		if err != nil {
			return err
		}
		n := map[string]int{}
		if err := tx.Bucket(bClusterIndex).ForEach(func(k, _ []byte) error {
			if c, _, ok := bytes.Cut(k, []byte{0}); ok {
				n[string(c)]++
			}
			return nil
		}); err != nil {
			return err
		}
		for c, v := range n {
			if err := counts.Put([]byte(c), []byte(strconv.Itoa(v))); err != nil {
				return err
			}
		}
		return nil
	},
	func(tx *bolt.Tx) error { // 9: API tokens, the tickets API idempotency keys created, feeds' dead letters
		for _, b := range [][]byte{bTokens, bTokenHash, bAPIIdem, bDeadLetters} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	func(tx *bolt.Tx) error { // 10: store servers
		_, err := tx.CreateBucketIfNotExists(bServers)
		return err
	},
	func(tx *bolt.Tx) error { // 11: the calendar (milestones, people away, duty rotations); freezes keep their bucket
		_, err := tx.CreateBucketIfNotExists(bCalendar)
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
	return s.bolt.Update(func(tx *bolt.Tx) error {
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

// WriteTo streams a consistent copy of the state as a bbolt file: the
// file itself on bbolt, every key copied into a new file on etcd.
func (s *Store) WriteTo(w io.Writer) (int64, error) {
	if s.bolt != nil {
		var n int64
		err := s.bolt.View(func(tx *bolt.Tx) error {
			var err error
			n, err = tx.WriteTo(w)
			return err
		})
		return n, err
	}
	dir, err := os.MkdirTemp("", "opsbot-export-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "state.db")
	if _, err := Copy(context.Background(), s.db, path); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// key names a record: its table, then the key in it.
func key(table []byte, k []byte) string { return string(table) + "/" + string(k) }

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

func getJSON(tx kv.Txn, k string, v any) (bool, error) {
	raw, ok, err := tx.Get(k)
	if err != nil || !ok {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(tx kv.Txn, k string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(k, raw)
}

// page is how many keys a walk reads at a time.
const page = 256

// each calls fn for the keys with prefix, in order, reading a page at a
// time, until fn returns false.
func each(tx kv.Txn, prefix string, fn func(k string, v []byte) (bool, error)) error {
	after := ""
	for {
		kvs, err := tx.Range(prefix, after, page)
		if err != nil {
			return err
		}
		for _, x := range kvs {
			more, err := fn(x.Key, x.Value)
			if err != nil || !more {
				return err
			}
		}
		if len(kvs) < page {
			return nil
		}
		after = kvs[len(kvs)-1].Key
	}
}

// revWalk walks the keys with prefix in reverse, a page at a time.
type revWalk struct {
	tx     kv.Txn
	prefix string
	before string
	buf    []kv.KV
	done   bool
}

func (w *revWalk) next() (kv.KV, bool, error) {
	if len(w.buf) == 0 && !w.done {
		kvs, err := w.tx.RangeRev(w.prefix, w.before, page)
		if err != nil {
			return kv.KV{}, false, err
		}
		w.buf, w.done = kvs, len(kvs) < page
		if len(kvs) > 0 {
			w.before = kvs[len(kvs)-1].Key
		}
	}
	if len(w.buf) == 0 {
		return kv.KV{}, false, nil
	}
	x := w.buf[0]
	w.buf = w.buf[1:]
	return x, true, nil
}

func ticketKey(num uint64) string { return key(bTickets, u64(num)) }

func loadTicket(tx kv.Txn, num uint64) (Ticket, error) {
	var t Ticket
	ok, err := getJSON(tx, ticketKey(num), &t)
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
	err := s.db.View(ctx, func(tx kv.Txn) error {
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
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, key(bEvents, u64(num)), func(_ string, v []byte) (bool, error) {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return false, err
			}
			out = append(out, e)
			return true, nil
		})
	})
	return out, err
}

// TicketAt reads a ticket and the event of one version of its history
// in one read (ok false when either is gone).
func (s *Store) TicketAt(ctx context.Context, id string, version int64) (t Ticket, ev Event, ok bool, err error) {
	num, valid := ParseID(id)
	if !valid {
		return t, ev, false, nil
	}
	err = s.db.View(ctx, func(tx kv.Txn) error {
		raw, found, err := tx.Get(key(bEvents, append(u64(num), u64(uint64(version))...)))
		if err != nil || !found {
			ok = false
			return err
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			return err
		}
		t, err = loadTicket(tx, num)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	return t, ev, ok, err
}

// Create allocates a ticket id and writes the first change, built by fn
// from that id. fn runs outside the write transaction, so rendering and
// encoding never hold the writer; a refused change (a lock held by
// another ticket) may leave a gap in the numbering.
func (s *Store) Create(ctx context.Context, fn func(id string) (Change, error)) (Ticket, error) {
	num, err := s.newTicketNumber(ctx)
	if err != nil {
		return Ticket{}, err
	}
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
	err = s.db.Update(ctx, func(tx kv.Txn) error {
		if err := recordDelivery(tx, d); err != nil {
			return err
		}
		if err := recordRequestTicket(ctx, tx, FormatID(num)); err != nil {
			return err
		}
		if err := forgetInbound(tx, in); err != nil {
			return err
		}
		if s.seqs == nil {
			// One writer: keep the counter at the highest number used.
			last, err := readCounter(tx, "tickets")
			if err != nil {
				return err
			}
			if last < num {
				if err := tx.Put(seqKey("tickets"), []byte(strconv.FormatUint(num, 10))); err != nil {
					return err
				}
			}
		}
		var err error
		out, err = s.apply(ctx, tx, num, nil, ch, pre)
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
// when another writer, here or on another replica, got there first). fn
// must not have side effects; its errors are returned unchanged.
// ErrNoChange from fn writes nothing and returns the ticket as it is.
func (s *Store) Transition(ctx context.Context, id string, fn func(t Ticket) (Change, error)) (Ticket, error) {
	num, ok := ParseID(id)
	if !ok {
		return Ticket{}, fmt.Errorf("ticket %q: %w", id, ErrNotFound)
	}
	if s.etcd != nil {
		return s.transitionIn(ctx, num, fn)
	}
	for attempt := 0; ; attempt++ {
		var cur Ticket
		var read []byte
		if err := s.db.View(ctx, func(tx kv.Txn) error {
			var err error
			cur, err = loadTicket(tx, num)
			read, _, _ = tx.Get(ticketKey(num))
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
		// Encoded here, outside the writer: the transaction only
		// compares and puts bytes.
		pre, err := prepare(cur.Version, ch)
		if err != nil {
			return Ticket{}, err
		}
		var out Ticket
		d, in := pendingDelivery(ctx), pendingInbound(ctx)
		err = s.db.Update(ctx, func(tx kv.Txn) error {
			// Any change rewrites the ticket, so the same bytes mean the
			// ticket is still at the version fn saw.
			now, _, err := tx.Get(ticketKey(num))
			if err != nil {
				return err
			}
			if !bytes.Equal(now, read) {
				return errConflict
			}
			if err := recordDelivery(tx, d); err != nil {
				return err
			}
			if err := forgetInbound(tx, in); err != nil {
				return err
			}
			out, err = s.apply(ctx, tx, num, &cur, ch, pre)
			return err
		})
		if errors.Is(err, errConflict) && attempt < 100 {
			continue
		}
		settled(err, d, in)
		return out, err
	}
}

// transitionIn is Transition with fn inside the transaction: on etcd
// there is no single writer to keep free, and the ticket read once is the
// read the commit checks (one round trip less than reading it first).
func (s *Store) transitionIn(ctx context.Context, num uint64, fn func(t Ticket) (Change, error)) (Ticket, error) {
	var out Ticket
	unchanged := false
	d, in := pendingDelivery(ctx), pendingInbound(ctx)
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		unchanged = false
		cur, err := loadTicket(tx, num)
		if err != nil {
			return err
		}
		ch, err := fn(cur)
		if errors.Is(err, ErrNoChange) {
			out, unchanged = cur, true
			return nil
		}
		if err != nil {
			return err
		}
		ch.Ticket.ID = cur.ID
		pre, err := prepare(cur.Version, ch)
		if err != nil {
			return err
		}
		if err := recordDelivery(tx, d); err != nil {
			return err
		}
		if err := forgetInbound(tx, in); err != nil {
			return err
		}
		out, err = s.apply(ctx, tx, num, &cur, ch, pre)
		return err
	})
	if err != nil {
		return Ticket{}, err
	}
	if !unchanged {
		settled(nil, d, in)
	}
	return out, nil
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
		if n.Ticket == p.ticket.ID {
			n.Version = p.ticket.Version
		}
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
func (s *Store) apply(ctx context.Context, tx kv.Txn, num uint64, old *Ticket, ch Change, pre *prepared) (Ticket, error) {
	t := pre.ticket
	if pre.event != nil {
		ek := append(u64(num), u64(uint64(t.Version))...)
		if err := tx.Put(key(bEvents, ek), pre.event); err != nil {
			return t, err
		}
	}
	// Locks: refuse a resource held by another ticket.
	for _, r := range ch.Acquire {
		h, ok, err := tx.Get(key(bLocks, []byte(r)))
		if err != nil {
			return t, err
		}
		if ok && string(h) != t.ID {
			return t, &LockedError{Resource: r, Holder: string(h)}
		}
		if err := tx.Put(key(bLocks, []byte(r)), []byte(t.ID)); err != nil {
			return t, err
		}
	}
	for _, r := range ch.Release {
		h, ok, err := tx.Get(key(bLocks, []byte(r)))
		if err != nil {
			return t, err
		}
		if ok && string(h) == t.ID {
			if err := tx.Delete(key(bLocks, []byte(r))); err != nil {
				return t, err
			}
		}
	}
	if err := reindex(tx, num, old, &t); err != nil {
		return t, err
	}
	if err := tx.Put(ticketKey(num), pre.raw); err != nil {
		return t, err
	}
	for _, j := range ch.Jobs {
		if err := putJob(tx, j); err != nil {
			return t, err
		}
	}
	for _, id := range ch.CancelJobs {
		var j Job
		ok, err := getJSON(tx, key(bJobs, []byte(id)), &j)
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
		id, err := s.next(ctx, tx, "outbox")
		if err != nil {
			return t, err
		}
		v, err := seqJSON(raw, "id", id)
		if err != nil {
			return t, err
		}
		if err := tx.Put(key(bOutbox, u64(id)), v); err != nil {
			return t, err
		}
	}
	if ch.Fire != nil {
		if _, ok, err := tx.Get(key(bTimers, timerKey(*ch.Fire))); err != nil {
			return t, err
		} else if !ok {
			return t, ErrTimerGone
		}
		if err := tx.Delete(key(bTimers, timerKey(*ch.Fire))); err != nil {
			return t, err
		}
	}
	for _, tm := range ch.ClearTimers {
		if err := tx.Delete(key(bTimers, timerKey(tm))); err != nil {
			return t, err
		}
	}
	for _, tm := range ch.SetTimers {
		if err := putJSON(tx, key(bTimers, timerKey(tm)), tm); err != nil {
			return t, err
		}
	}
	for i, raw := range pre.audit {
		if err := s.putAudit(ctx, tx, ch.Audit[i].Ticket, NormName(ch.Audit[i].User), raw); err != nil {
			return t, err
		}
	}
	return t, nil
}

func reindex(tx kv.Txn, num uint64, old, t *Ticket) error {
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
		for _, p := range ix.old {
			if !slices.Contains(ix.new, p) {
				if err := tx.Delete(key(ix.b, idxKey(p, num))); err != nil {
					return err
				}
			}
		}
		for _, p := range ix.new {
			if !slices.Contains(ix.old, p) {
				if err := tx.Put(key(ix.b, idxKey(p, num)), nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// LockHolder returns the ticket holding a resource, or "".
func (s *Store) LockHolder(ctx context.Context, resource string) (string, error) {
	var h string
	err := s.db.View(ctx, func(tx kv.Txn) error {
		v, _, err := tx.Get(key(bLocks, []byte(resource)))
		h = string(v)
		return err
	})
	return h, err
}

// Index names a ticket index for List.
type Index struct {
	// Kind is "open", "flow", "requester" or "waiting".
	Kind string
	// Keys are the flow names, requesters or roles to merge; ignored for "open".
	Keys []string
	// Before, when set, starts below this ticket number (cursor paging).
	Before uint64
}

// ListPage is one page of tickets, newest first.
type ListPage struct {
	Tickets []Ticket
	More    bool
}

// List walks an index newest first, merging its keys, and returns the
// tickets for which keep returns true, skipping the first offset of them.
// It reads only the index entries it needs, never the whole ticket table.
func (s *Store) List(ctx context.Context, ix Index, keep func(Ticket) bool, offset, limit int) (ListPage, error) {
	var page ListPage
	var table []byte
	keys := ix.Keys
	switch ix.Kind {
	case "open":
		table, keys = bIdxOpen, []string{""}
	case "flow":
		table = bIdxFlow
	case "requester":
		table = bIdxReq
	case "waiting":
		table = bIdxWait
	case "all":
		table = bTickets
	default:
		return page, fmt.Errorf("unknown index %q", ix.Kind)
	}
	err := s.db.View(ctx, func(tx kv.Txn) error {
		page = ListPage{}
		var next func() (uint64, bool, error)
		if ix.Kind == "all" {
			next = descNumbers(tx, table)
		} else {
			next = mergeDesc(tx, table, keys)
		}
		skipped := 0
		for {
			num, ok, err := next()
			if err != nil || !ok {
				return err
			}
			if ix.Before > 0 && num >= ix.Before {
				continue
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

// descNumbers walks a table keyed by 8-byte numbers, highest first.
func descNumbers(tx kv.Txn, table []byte) func() (uint64, bool, error) {
	w := &revWalk{tx: tx, prefix: key(table, nil)}
	skip := len(w.prefix)
	return func() (uint64, bool, error) {
		for {
			x, ok, err := w.next()
			if err != nil || !ok {
				return 0, false, err
			}
			if len(x.Key) == skip+8 {
				return binary.BigEndian.Uint64([]byte(x.Key[skip:])), true, nil
			}
		}
	}
}

// mergeDesc merges the index entries of several prefixes, highest ticket
// number first, without duplicates.
func mergeDesc(tx kv.Txn, table []byte, prefixes []string) func() (uint64, bool, error) {
	heads := make([]*walkHead, 0, len(prefixes))
	for _, p := range prefixes {
		h := &walkHead{w: &revWalk{tx: tx, prefix: key(table, append([]byte(p), 0))}}
		heads = append(heads, h)
	}
	started := false
	var last uint64
	return func() (uint64, bool, error) {
		if !started {
			started = true
			for _, h := range heads {
				if err := h.settle(); err != nil {
					return 0, false, err
				}
			}
		}
		for {
			var best *walkHead
			for _, h := range heads {
				if h.ok && (best == nil || h.num > best.num) {
					best = h
				}
			}
			if best == nil {
				return 0, false, nil
			}
			n := best.num
			if err := best.settle(); err != nil {
				return 0, false, err
			}
			if n == last {
				continue
			}
			last = n
			return n, true, nil
		}
	}
}

type walkHead struct {
	w   *revWalk
	num uint64
	ok  bool
}

// settle moves the head to the next well-formed key of its prefix. Keys
// that share the prefix but are not "<prefix><8 bytes>" (another name that
// starts with this one and a NUL, a key written by a damaged or older
// build) are skipped, not taken as the prefix's end.
func (h *walkHead) settle() error {
	for {
		x, ok, err := h.w.next()
		if err != nil {
			return err
		}
		if !ok {
			h.ok = false
			return nil
		}
		if len(x.Key) == len(h.w.prefix)+8 {
			h.ok, h.num = true, binary.BigEndian.Uint64([]byte(x.Key[len(h.w.prefix):]))
			return nil
		}
	}
}

// Used is the size of the state: on bbolt the pages in use, without the
// room a file keeps at its end for growth; on etcd the database size the
// cluster reports (every installation on it together).
func (s *Store) Used() int64 {
	var n int64
	if s.bolt != nil {
		_ = s.bolt.View(func(tx *bolt.Tx) error {
			n = tx.Size()
			return nil
		})
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, ep := range s.etcd.Endpoints() {
		if st, err := s.etcd.Status(ctx, ep); err == nil {
			return st.DbSize
		}
	}
	return 0
}
