package state_test

import (
	"context"
	"testing"
	"time"

	"opsbot/state"
)

// TestMoveStoresIsIdempotentAndWarnsOncePerCrossing: a repeated move (a
// retry after a restart) changes nothing and warns nobody; the warning is
// queued in the move's own transaction, once per crossing, and re-armed
// when stores leave.
func TestMoveStoresIsIdempotentAndWarnsOncePerCrossing(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s := open(t)
		var stores []state.StoreInfo
		for _, id := range []string{"A", "B", "C", "D", "E"} {
			stores = append(stores, state.StoreInfo{ID: id, Env: "uat", Cluster: "old"})
		}
		if err := s.PutInventory(ctx, []state.Cluster{{Name: "c1", Capacity: 4}, {Name: "old", Capacity: 10}}, stores); err != nil {
			t.Fatal(err)
		}
		warn := &state.MoveWarning{At: 0.75, Capacity: map[string]int{"c1": 4, "old": 10}, Channel: "infra"}
		move := func(to string, ids ...string) state.MoveResult {
			t.Helper()
			r, err := s.MoveStores(ctx, state.Move{Stores: ids, To: to, Ticket: "T-1", At: time.Now(), Warn: warn})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		pending := func() int {
			n, err := s.Pending(ctx, time.Now().Add(time.Hour), 100)
			if err != nil {
				t.Fatal(err)
			}
			return len(n)
		}
		if r := move("c1", "A", "B"); len(r.Moved) != 2 || r.Before != 0 || r.After != 2 || r.Warned || r.From["A"] != "old" {
			t.Fatalf("first move %+v", r)
		}
		if r := move("c1", "C"); !r.Warned || r.After != 3 || pending() != 1 {
			t.Fatalf("crossing 75%%: %+v, %d queued", r, pending())
		}
		if r := move("c1", "C"); len(r.Moved) != 0 || len(r.Kept) != 1 || r.Warned || pending() != 1 {
			t.Fatalf("repeat: %+v, %d queued", r, pending())
		}
		if r := move("c1", "D"); r.Warned || pending() != 1 {
			t.Fatalf("still over: %+v", r)
		}
		move("old", "C", "D") // c1 falls to 2/4: re-armed
		if r := move("c1", "E", "D"); !r.Warned || pending() != 2 {
			t.Fatalf("crossing again: %+v, %d queued", r, pending())
		}
		_, ss, err := s.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := map[string]int{}
		for _, st := range ss {
			in[st.Cluster]++
		}
		if in["c1"] != 4 || in["old"] != 1 {
			t.Fatalf("counts %v", in)
		}
		if _, err := s.MoveStores(ctx, state.Move{Stores: []string{"Z"}, To: "c1"}); err == nil {
			t.Fatal("moved an unknown store")
		}
	})
}
