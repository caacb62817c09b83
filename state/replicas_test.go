package state_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/state"
	"opsbot/state/kv"
)

// Two replicas of one state (two stores on one etcd prefix) racing: every
// ticket number is handed out once, of two approvals of one version one
// applies, of two tickets taking one lock one gets it, of two deliveries
// of one request one is applied.
func TestReplicasRaceToOneOutcome(t *testing.T) {
	prefix := newPrefix()
	a, b := openEtcdAt(t, prefix), openEtcdAt(t, prefix)
	ctx := context.Background()

	// Numbers: 2 replicas x 4 writers x 10 tickets, all distinct.
	var mu sync.Mutex
	ids := map[string]bool{}
	var wg sync.WaitGroup
	for _, s := range []*state.Store{a, b} {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					tk := create(t, s, "golive", "alice", []string{"techlead"})
					mu.Lock()
					if ids[tk.ID] {
						t.Errorf("%s handed out twice", tk.ID)
					}
					ids[tk.ID] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(ids) != 80 {
		t.Fatalf("%d tickets, want 80", len(ids))
	}
	page, err := a.List(ctx, state.Index{Kind: "waiting", Keys: []string{"techlead"}}, nil, 0, 100)
	if err != nil || len(page.Tickets) != 80 {
		t.Fatalf("replica a lists %d tickets waiting (%v), want 80", len(page.Tickets), err)
	}

	// One approval click delivered to both replicas at once.
	id := page.Tickets[0].ID
	var applied, refused int
	for round := 0; round < 5; round++ {
		res := make(chan error, 2)
		for _, s := range []*state.Store{a, b} {
			go func() {
				cur, _ := s.Get(ctx, id)
				seen := cur.Version
				_, err := s.Transition(ctx, id, func(t state.Ticket) (state.Change, error) {
					if t.Version != seen {
						return state.Change{}, errors.New("stale card")
					}
					return state.Change{Ticket: t, Event: state.Event{Type: "approve", Actor: "bob"}}, nil
				})
				res <- err
			}()
		}
		for i := 0; i < 2; i++ {
			if err := <-res; err == nil {
				applied++
			} else {
				refused++
			}
		}
	}
	evs, _ := b.Events(ctx, id)
	if got := len(evs) - 1; got != applied || applied < 5 {
		t.Fatalf("%d approvals applied (%d refused), %d events written", applied, refused, got)
	}

	// One lock, two replicas.
	for round := 0; round < 5; round++ {
		res := make(chan error, 2)
		resource := fmt.Sprintf("service:race-%d", round)
		for _, s := range []*state.Store{a, b} {
			go func() {
				_, err := s.Create(ctx, func(string) (state.Change, error) {
					return state.Change{Ticket: state.Ticket{Flow: "golive", Open: true}, Event: state.Event{Type: "submit"}, Acquire: []string{resource}}, nil
				})
				res <- err
			}()
		}
		won, lost := 0, 0
		for i := 0; i < 2; i++ {
			var le *state.LockedError
			switch err := <-res; {
			case err == nil:
				won++
			case errors.As(err, &le):
				lost++
			default:
				t.Fatal(err)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("lock %s: %d won, %d refused", resource, won, lost)
		}
	}

	// One timer, two replicas firing it.
	for round := 0; round < 5; round++ {
		tm := state.Timer{Due: time.Now(), Ticket: id, Kind: "remind", Stage: "review", StageVersion: int64(round)}
		if _, err := a.Transition(ctx, id, func(cur state.Ticket) (state.Change, error) {
			return state.Change{Ticket: cur, SetTimers: []state.Timer{tm}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 2)
		for _, s := range []*state.Store{a, b} {
			go func() {
				_, err := s.Transition(ctx, id, func(cur state.Ticket) (state.Change, error) {
					return state.Change{Ticket: cur, Event: state.Event{Type: "remind"}, Fire: &tm}, nil
				})
				res <- err
			}()
		}
		fired, gone := 0, 0
		for i := 0; i < 2; i++ {
			switch err := <-res; {
			case err == nil:
				fired++
			case errors.Is(err, state.ErrTimerGone):
				gone++
			default:
				t.Fatal(err)
			}
		}
		if fired != 1 || gone != 1 {
			t.Fatalf("timer %d: fired %d times, found gone %d times", round, fired, gone)
		}
	}

	// One delivery, two replicas.
	now := time.Now()
	for round := 0; round < 5; round++ {
		res := make(chan bool, 2)
		for _, s := range []*state.Store{a, b} {
			go func() {
				seen, err := s.Remember(ctx, fmt.Sprintf("slack:retry-%d", round), now, time.Hour)
				if err != nil {
					t.Error(err)
				}
				res <- seen
			}()
		}
		if first, second := <-res, <-res; first == second {
			t.Fatalf("delivery %d: both replicas saw it as %v", round, first)
		}
	}
}

// One ticket's notifications come out in the order of its versions, even
// when the replicas' number blocks say otherwise.
func TestOutboxKeepsEachTicketsOrderAcrossReplicas(t *testing.T) {
	prefix := newPrefix()
	a, b := openEtcdAt(t, prefix), openEtcdAt(t, prefix)
	ctx := context.Background()
	tk := create(t, a, "golive", "alice", nil)
	// Replica b reserves a later block first; a writes version 2 from its
	// earlier block after b wrote version... a's block comes first, so
	// version 3 written by a has a lower number than version 2 by b.
	step := func(s *state.Store, n int) {
		t.Helper()
		_, err := s.Transition(ctx, tk.ID, func(cur state.Ticket) (state.Change, error) {
			return state.Change{Ticket: cur, Event: state.Event{Type: "note"},
				Notify: []state.Notification{{User: "alice", Ticket: cur.ID, Kind: state.NotifyProgress, Message: []byte(fmt.Sprintf(`"step %d"`, n))}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	step(a, 1) // a's block: 1..16
	step(b, 2) // b's block: 17..32
	step(a, 3) // a again: 2
	got, err := b.Pending(ctx, time.Now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, n := range got {
		order = append(order, string(n.Message))
	}
	if fmt.Sprint(order) != `["step 1" "step 2" "step 3"]` {
		t.Fatalf("delivery order %v", order)
	}
}

// A state copied from bbolt into etcd and back is identical record by
// record; a copy cut short is finished by running it again; a backup of
// the etcd state is a state file that verifies and opens.
func TestMigrateBetweenBackends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src, err := state.Open(state.Options{Path: filepath.Join(dir, "src.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := 0; i < 300; i++ {
		tk := create(t, src, "golive", fmt.Sprintf("user%d", i%7), []string{"techlead"}, fmt.Sprintf("service:s%d", i))
		src.Audit(ctx, state.AuditEntry{At: time.Now(), User: "bob", Ticket: tk.ID, Action: "command"})
	}
	if _, err := src.PutUser(ctx, state.User{Name: "bob", IDs: map[string]string{"slack": "U1"}}); err != nil {
		t.Fatal(err)
	}
	if err := src.PutInventory(ctx, []state.Cluster{{Name: "c1", Capacity: 40}}, []state.StoreInfo{{ID: "S1", Cluster: "c1"}, {ID: "S2", Cluster: "c1"}}); err != nil {
		t.Fatal(err)
	}
	dst := openEtcd(t)

	// Cut short after three transactions, then run again: it copies what
	// is missing only.
	cut := &failAfter{DB: dst.KV()}
	cut.n.Store(3)
	first, err := state.Sync(ctx, src.KV(), cut, true)
	if err == nil {
		t.Fatal("a copy cut short reported success")
	}
	st, err := state.Sync(ctx, src.KV(), dst.KV(), true)
	// What the first run wrote (at most its three batches: the failure
	// cancels the ones in flight) and the schema both had are the same;
	// the rest is added.
	if err != nil || st.Same < 1 || st.Same > 3*kv.MaxOps+1 || st.Added == 0 || st.Changed+st.Removed != 0 {
		t.Fatalf("copy again: %+v %v (first: %+v)", st, err, first)
	}
	again, err := state.Sync(ctx, src.KV(), dst.KV(), false)
	if err != nil || again.Differs() || again.Same != st.Same+st.Added+st.Changed {
		t.Fatalf("after the copy: %+v %v", again, err)
	}
	// The copy is a working state: same tickets, events, audit, users,
	// inventory; new numbers go on past the copied ones.
	page, _ := dst.List(ctx, state.Index{Kind: "requester", Keys: []string{"user3"}}, nil, 0, 100)
	if len(page.Tickets) != 43 {
		t.Fatalf("user3 has %d tickets in etcd, want 43", len(page.Tickets))
	}
	if u, err := dst.UserByPlatform(ctx, "slack", "U1"); err != nil || u.Name != "bob" {
		t.Fatalf("user in etcd: %+v %v", u, err)
	}
	if h, _ := dst.LockHolder(ctx, "service:s7"); h != "T-8" {
		t.Fatalf("lock holder in etcd: %q", h)
	}
	if tk := create(t, dst, "golive", "alice", nil); tk.ID != "T-301" {
		t.Fatalf("the first new ticket in etcd is %s, want T-301", tk.ID)
	}

	// Back into a bbolt file, through the etcd backup.
	backup := filepath.Join(dir, "back.db")
	if _, err := dst.Backup(backup); err != nil {
		t.Fatal(err)
	}
	sum, err := state.Verify(backup)
	if err != nil || sum.Tickets != 301 || sum.Schema != state.SchemaVersion() {
		t.Fatalf("backup of etcd: %+v %v", sum, err)
	}
	back, err := state.Open(state.Options{Path: backup})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	diff, err := state.Sync(ctx, dst.KV(), back.KV(), false)
	if err != nil || diff.Differs() {
		t.Fatalf("etcd and its backup differ: %+v %v", diff, err)
	}
	if tk := create(t, back, "golive", "alice", nil); num(tk.ID) <= 301 {
		t.Fatalf("a ticket in the restored file reused a number: %s", tk.ID)
	}
}

func num(id string) uint64 {
	n, _ := state.ParseID(id)
	return n
}

// failAfter fails every Update after its first n.
type failAfter struct {
	kv.DB
	n atomic.Int32
}

func (f *failAfter) Update(ctx context.Context, fn func(kv.Txn) error) error {
	if f.n.Add(-1) < 0 {
		return errors.New("connection lost")
	}
	return f.DB.Update(ctx, fn)
}
