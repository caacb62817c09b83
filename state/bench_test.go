package state_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"opsbot/state"
	"opsbot/state/etcdtest"
)

var (
	waitingOnce  sync.Once
	waitingStore *state.Store
	benchDir     string
)

func TestMain(m *testing.M) {
	c, stop, err := etcdtest.StartShared(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
	sharedEtcd = c
	code := m.Run()
	stop()
	if waitingStore != nil {
		waitingStore.Close()
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// seed creates n tickets waiting for techlead from 64 goroutines, so the
// creates share fsyncs.
func seed(b *testing.B, s *state.Store, n int, requester func(int) string) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				create(b, s, "golive", requester(i), []string{"techlead"})
			}
		}()
	}
	wg.Wait()
}

// BenchmarkTransitionParallel is a durable approval on distinct tickets
// from many goroutines: read, check the version, append the event and
// write the projection and indexes, batched into shared fsyncs.
func BenchmarkTransitionParallel(b *testing.B) { benchTransitions(b, openBolt(b)) }

// BenchmarkTransitionParallelEtcd is the same on the three-member etcd.
func BenchmarkTransitionParallelEtcd(b *testing.B) { benchTransitions(b, openEtcd(b)) }

func benchTransitions(b *testing.B, s *state.Store) {
	ctx := context.Background()
	seed(b, s, b.N+64, func(i int) string { return "alice" })
	var next atomic.Int64
	b.ResetTimer()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := state.FormatID(uint64(next.Add(1)))
			if _, err := s.Transition(ctx, id, func(cur state.Ticket) (state.Change, error) {
				cur.Stage, cur.Open, cur.WaitingRoles = "done", false, nil
				return state.Change{Ticket: cur, Event: state.Event{Type: "approve", Actor: "bob"},
					Audit: []state.AuditEntry{{User: "bob", Action: "command approve", Ticket: id, Result: "ok"}}}, nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkListWaiting pages a "waiting for techlead" index of 20,000
// tickets.
func BenchmarkListWaiting(b *testing.B) {
	waitingOnce.Do(func() {
		// Shared by every round of the benchmark; TestMain removes it.
		dir, err := os.MkdirTemp("", "opsbot-bench-")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		if waitingStore, err = state.Open(state.Options{Path: filepath.Join(dir, "s.db")}); err != nil {
			b.Fatal(err)
		}
		seed(b, waitingStore, 20000, func(i int) string { return fmt.Sprint("u", i%50) })
	})
	s := waitingStore
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := s.List(ctx, state.Index{Kind: "waiting", Keys: []string{"techlead", "tester"}}, nil, 0, 20)
		if err != nil || len(p.Tickets) != 20 {
			b.Fatal(err)
		}
	}
}
