package state_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"opsbot/state"
)

func create(t testing.TB, s *state.Store, flow, requester string, roles []string, locks ...string) state.Ticket {
	t.Helper()
	tk, err := s.Create(context.Background(), func(id string) (state.Change, error) {
		return state.Change{
			Ticket:  state.Ticket{Flow: flow, Stage: "review", Open: true, Requester: requester, WaitingRoles: roles, Locks: locks},
			Event:   state.Event{Type: "submit", Actor: requester},
			Acquire: locks,
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTransitionAppendsEventsAndProjectionTogether(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		tk := create(t, s, "golive", "alice", []string{"techlead"})
		if tk.ID != "T-1" || tk.Version != 1 {
			t.Fatalf("created %+v", tk)
		}
		boom := errors.New("guard refused")
		if _, err := s.Transition(ctx, "T-1", func(cur state.Ticket) (state.Change, error) { return state.Change{}, boom }); !errors.Is(err, boom) {
			t.Fatalf("err %v", err)
		}
		got, _ := s.Get(ctx, "T-1")
		evs, _ := s.Events(ctx, "T-1")
		if got.Version != 1 || len(evs) != 1 {
			t.Fatalf("refused transition wrote: v%d, %d events", got.Version, len(evs))
		}
		got, err := s.Transition(ctx, "t-1", func(cur state.Ticket) (state.Change, error) {
			cur.Stage, cur.Open, cur.WaitingRoles = "done", false, nil
			return state.Change{Ticket: cur, Event: state.Event{Type: "approve", Actor: "bob"}, Release: cur.Locks}, nil
		})
		if err != nil || got.Version != 2 {
			t.Fatalf("transition: %+v %v", got, err)
		}
		evs, _ = s.Events(ctx, "T-1")
		if len(evs) != 2 || evs[1].Seq != 2 || evs[1].Actor != "bob" {
			t.Fatalf("events %+v", evs)
		}
		if _, err := s.Get(ctx, "T-404"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("missing ticket: %v", err)
		}
	})
}

func TestLocksRefuseASecondTicketAndAreReleased(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		create(t, s, "golive", "alice", nil, "service:payments")
		_, err := s.Create(ctx, func(id string) (state.Change, error) {
			return state.Change{Ticket: state.Ticket{Flow: "golive", Open: true}, Event: state.Event{Type: "submit"}, Acquire: []string{"service:payments"}}, nil
		})
		var le *state.LockedError
		if !errors.As(err, &le) || le.Holder != "T-1" || le.Resource != "service:payments" {
			t.Fatalf("second lock: %v", err)
		}
		page, _ := s.List(ctx, state.Index{Kind: "all"}, nil, 0, 10)
		if len(page.Tickets) != 1 {
			t.Fatalf("refused ticket stored: %d tickets", len(page.Tickets))
		}
		s.Transition(ctx, "T-1", func(cur state.Ticket) (state.Change, error) {
			cur.Open = false
			return state.Change{Ticket: cur, Event: state.Event{Type: "cancel"}, Release: cur.Locks}, nil
		})
		if h, _ := s.LockHolder(ctx, "service:payments"); h != "" {
			t.Fatalf("lock kept by %s", h)
		}
	})
}

func TestConcurrentTransitionsSerialize(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		create(t, s, "golive", "alice", nil)
		var wg sync.WaitGroup
		applied := make(chan int64, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each goroutine acts only on the version it read: one wins.
				_, err := s.Transition(ctx, "T-1", func(cur state.Ticket) (state.Change, error) {
					if cur.Version != 1 {
						return state.Change{}, fmt.Errorf("stale")
					}
					return state.Change{Ticket: cur, Event: state.Event{Type: "approve"}}, nil
				})
				if err == nil {
					applied <- 1
				}
			}()
		}
		wg.Wait()
		close(applied)
		if len(applied) != 1 {
			t.Fatalf("%d transitions applied on the same version", len(applied))
		}
	})
}

func TestIndexesListWithoutScanning(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		for i := 0; i < 30; i++ {
			roles := []string{"techlead"}
			if i%3 == 0 {
				roles = []string{"tester"}
			}
			flow := "golive"
			if i%2 == 0 {
				flow = "restart"
			}
			create(t, s, flow, fmt.Sprintf("user%d", i%4), roles)
		}
		page, err := s.List(ctx, state.Index{Kind: "waiting", Keys: []string{"tester", "techlead"}}, nil, 0, 100)
		if err != nil || len(page.Tickets) != 30 {
			t.Fatalf("merged waiting: %d %v", len(page.Tickets), err)
		}
		for i := 1; i < len(page.Tickets); i++ {
			a, _ := state.ParseID(page.Tickets[i-1].ID)
			b, _ := state.ParseID(page.Tickets[i].ID)
			if a <= b {
				t.Fatalf("not newest first: %s then %s", page.Tickets[i-1].ID, page.Tickets[i].ID)
			}
		}
		if page.Tickets[0].ID != "T-30" {
			t.Fatalf("first %s", page.Tickets[0].ID)
		}
		page, _ = s.List(ctx, state.Index{Kind: "waiting", Keys: []string{"tester"}}, nil, 0, 100)
		if len(page.Tickets) != 10 {
			t.Fatalf("tester waiting: %d", len(page.Tickets))
		}
		page, _ = s.List(ctx, state.Index{Kind: "flow", Keys: []string{"restart"}}, nil, 5, 5)
		if len(page.Tickets) != 5 || !page.More || page.Tickets[0].ID != "T-19" {
			t.Fatalf("flow page 2: %d more=%v first=%s", len(page.Tickets), page.More, page.Tickets[0].ID)
		}
		page, _ = s.List(ctx, state.Index{Kind: "requester", Keys: []string{"user1"}}, nil, 0, 100)
		if len(page.Tickets) != 8 {
			t.Fatalf("requester: %d", len(page.Tickets))
		}
		// Closing a ticket takes it out of the open and waiting indexes.
		s.Transition(ctx, "T-30", func(cur state.Ticket) (state.Change, error) {
			cur.Open, cur.WaitingRoles = false, nil
			return state.Change{Ticket: cur, Event: state.Event{Type: "approve"}}, nil
		})
		page, _ = s.List(ctx, state.Index{Kind: "open"}, nil, 0, 100)
		if len(page.Tickets) != 29 || page.Tickets[0].ID != "T-29" {
			t.Fatalf("open after close: %d", len(page.Tickets))
		}
		page, _ = s.List(ctx, state.Index{Kind: "waiting", Keys: []string{"techlead"}}, nil, 0, 100)
		if len(page.Tickets) != 19 || page.Tickets[0].ID != "T-29" {
			t.Fatalf("techlead waiting after close: %d", len(page.Tickets))
		}
	})
}

func TestIdempotencyKeysExpire(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if seen, _ := s.Remember(ctx, "slack:Ev1", now, time.Hour); seen {
			t.Fatal("new key reported seen")
		}
		if seen, _ := s.Remember(ctx, "slack:Ev1", now.Add(time.Minute), time.Hour); !seen {
			t.Fatal("retry within ttl not recognised")
		}
		if n, _ := s.SweepIdempotency(ctx, now.Add(30*time.Minute)); n != 0 {
			t.Fatalf("swept %d live keys", n)
		}
		if n, _ := s.SweepIdempotency(ctx, now.Add(2*time.Hour)); n != 1 {
			t.Fatalf("swept %d expired keys, want 1", n)
		}
		if seen, _ := s.Remember(ctx, "slack:Ev1", now.Add(3*time.Hour), time.Hour); seen {
			t.Fatal("expired key still seen")
		}
	})
}

func TestSchemaVersionAndBackup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	s, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	create(t, s, "golive", "alice", nil)
	// The file is locked while open: a second opener times out clearly.
	if _, err := state.Open(state.Options{Path: path, OpenTimeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second open of a locked file succeeded")
	}
	backup := filepath.Join(dir, "copy.db")
	if _, err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c, err := state.Open(state.Options{Path: backup, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tk, err := c.Get(context.Background(), "T-1"); err != nil || tk.Requester != "alice" {
		t.Fatalf("backup lacks the ticket: %+v %v", tk, err)
	}
	if state.SchemaVersion() < 1 {
		t.Fatal("no schema version")
	}
}

func TestUsersRolesAndAudit(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		if _, err := s.PutUser(ctx, state.User{Name: "Bob", IDs: map[string]string{"slack": "U1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutUser(ctx, state.User{Name: "eve", IDs: map[string]string{"slack": "U1"}}); err == nil {
			t.Fatal("a platform id was given to two users")
		}
		if changed, err := s.Grant(ctx, "TechLead", "BOB", state.AuditEntry{User: "root", Action: "role grant"}); !changed || err != nil {
			t.Fatalf("grant: %v %v", changed, err)
		}
		if changed, _ := s.Grant(ctx, "techlead", "bob"); changed {
			t.Fatal("second grant changed something")
		}
		if _, err := s.Grant(ctx, "techlead", "nobody"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("grant to unknown user: %v", err)
		}
		m, _ := s.RoleMembers(ctx, "techlead")
		u, _ := s.UserByPlatform(ctx, "slack", "U1")
		if len(m) != 1 || m[0] != "bob" || u.Name != "bob" {
			t.Fatalf("members %v user %+v", m, u)
		}
		s.Revoke(ctx, "techlead", "Bob")
		if m, _ := s.RoleMembers(ctx, "techlead"); len(m) != 0 {
			t.Fatalf("after revoke: %v", m)
		}
		for i := 0; i < 25; i++ {
			s.Audit(ctx, state.AuditEntry{User: "Alice", Action: "command", Ticket: "T-1", Args: fmt.Sprint(i)})
		}
		entries, more, _ := s.AuditLog(ctx, state.AuditQuery{User: "ALICE"}, 0, 20)
		if len(entries) != 20 || !more || entries[0].Args != "24" {
			t.Fatalf("audit page 1: %d more=%v first=%+v", len(entries), more, entries[0])
		}
		entries, more, _ = s.AuditLog(ctx, state.AuditQuery{Ticket: "t-1"}, 20, 20)
		if len(entries) != 5 || more {
			t.Fatalf("audit page 2: %d more=%v", len(entries), more)
		}
	})
}

// TestTicketWriteForgetsItsInput: input recorded before its ack is
// forgotten by the ticket write its handling makes, in that write's own
// transaction; a refused write keeps it for the replay.
func TestTicketWriteForgetsItsInput(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		create(t, s, "golive", "alice", []string{"techlead"})
		id, _, err := s.AddInbound(ctx, state.Inbound{Platform: "slack", Kind: "click", Payload: []byte("approve")}, "", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pending := func() int {
			in, err := s.PendingInbound(ctx, "slack")
			if err != nil {
				t.Fatal(err)
			}
			return len(in)
		}
		hctx := state.WithInbound(ctx, id)
		boom := errors.New("refused")
		if _, err := s.Transition(hctx, "T-1", func(cur state.Ticket) (state.Change, error) { return state.Change{}, boom }); !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if pending() != 1 || state.InboundForgotten(hctx) {
			t.Fatal("a refused write forgot the input")
		}
		if _, err := s.Transition(hctx, "T-1", func(cur state.Ticket) (state.Change, error) {
			return state.Change{Ticket: cur, Event: state.Event{Type: "approve", Actor: "bob"}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if pending() != 0 || !state.InboundForgotten(hctx) {
			t.Fatal("the ticket write did not forget its input")
		}
	})
}
