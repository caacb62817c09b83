package bot_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"opsbot/state"
	"opsbot/state/etcdtest"
)

// seedTickets writes n tickets, each with its event, indexes and an
// audit entry, to a new state file, from many goroutines.
func seedTickets(t *testing.T, path string, n int) {
	t.Helper()
	st, err := state.Open(state.Options{Path: path, Bulk: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer st.Flush()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				_, err := st.Create(ctx, func(id string) (state.Change, error) {
					req := fmt.Sprintf("user%d", i%97)
					return state.Change{
						Ticket: state.Ticket{Flow: "golive", Stage: "plan_review", Open: i%3 != 0, Requester: req,
							WaitingRoles: []string{"techlead"}, Fields: map[string]string{"service": fmt.Sprintf("svc%d", i)}},
						Event: state.Event{Type: "submit", Actor: req},
						Audit: []state.AuditEntry{{At: time.Now(), User: req, Action: "command new", Ticket: id, Result: "ok"}},
					}, nil
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
	if _, err := st.PutUser(ctx, state.User{Name: "bob", Display: "Bob", IDs: map[string]string{"slack": "U0BOB"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutInventory(ctx, []state.Cluster{{Name: "c1", Capacity: 100}}, []state.StoreInfo{{ID: "S1", Cluster: "c1"}}); err != nil {
		t.Fatal(err)
	}
}

// opsbot migrate copies a 100,000-ticket state into etcd and back, and
// the round trip is identical record by record. A copy killed half way
// is finished by running the command again.
func TestMigrate100kTicketsToEtcdAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 tickets through a real etcd")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "opsbot.db")
	began := time.Now()
	seedTickets(t, src, 100_000)
	seeded := time.Since(began)
	c := etcdtest.Start(t, 3)
	eps := strings.Join(c.Endpoints(), ",")
	bin := buildBinary(t)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"migrate"}, args...)...).CombinedOutput()
		return string(out), err
	}

	// Killed half way...
	cmd := exec.Command(bin, "migrate", "-from", "bbolt:"+src, "-to", "etcd:"+eps)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if out, err := run("-check", "-from", "bbolt:"+src, "-to", "etcd:"+eps); err == nil {
		t.Fatalf("the copy killed after 2s is already complete; the kill proves nothing: %s", out)
	}
	// ...and run again: it finishes and checks.
	began = time.Now()
	out, err := run("-from", "bbolt:"+src, "-to", "etcd:"+eps)
	if err != nil || !strings.Contains(out, "verified:") {
		t.Fatalf("migrate to etcd: %v\n%s", err, out)
	}
	toEtcd := time.Since(began)
	t.Log(strings.TrimSpace(out))

	back := filepath.Join(dir, "back.db")
	began = time.Now()
	out, err = run("-from", "etcd:"+eps, "-to", "bbolt:"+back)
	if err != nil || !strings.Contains(out, "verified:") {
		t.Fatalf("migrate back: %v\n%s", err, out)
	}
	fromEtcd := time.Since(began)
	out, err = run("-check", "-from", "bbolt:"+src, "-to", "bbolt:"+back)
	if err != nil || !strings.HasPrefix(out, "identical: ") {
		t.Fatalf("the round trip differs: %v\n%s", err, out)
	}
	t.Logf("100,000 tickets: seeded in %s, to etcd in %s (after a kill), back in %s; %s", seeded.Round(time.Second),
		toEtcd.Round(time.Second), fromEtcd.Round(time.Second), strings.TrimSpace(out))

	// The copy is a state the bot uses: same tickets, users, inventory.
	sum, err := state.Verify(back)
	if err == nil && sum.Tickets != 100_000 {
		err = fmt.Errorf("%d tickets", sum.Tickets)
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(state.Options{Path: back})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := st.Get(context.Background(), "T-77777")
	if err != nil || tk.Fields["service"] == "" {
		t.Fatalf("T-77777 after the round trip: %+v %v", tk, err)
	}
	if u, err := st.UserByPlatform(context.Background(), "slack", "U0BOB"); err != nil || u.Display != "Bob" {
		t.Fatalf("bob after the round trip: %+v %v", u, err)
	}
	st.Close()

	// The same copy again is a resume with nothing to do; a copy of
	// another state over it is refused.
	out, err = run("-from", "bbolt:"+src, "-to", "etcd:"+eps)
	if err != nil || !strings.Contains(out, "copied: 0 records written, 0 changed, 0 removed") {
		t.Fatalf("the same source again: %v %s", err, out)
	}
	other := filepath.Join(dir, "other.db")
	seedTickets(t, other, 3)
	out, err = run("-from", "bbolt:"+other, "-to", "etcd:"+eps)
	if err == nil || !strings.Contains(out, "being filled from another state") {
		t.Fatalf("a copy over another state: %v %s", err, out)
	}
}
