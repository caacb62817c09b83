package bot_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
)

const hookSecret = "whsec-0123456789abcdef0123456789"

// receiver is a webhook receiver as a careful integrator writes one: it
// checks each signature and its freshness, de-duplicates by event id and
// checks each ticket's events arrive in order.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	seen    map[string]bot.WebhookEvent
	order   map[string][]int64 // ticket -> versions, first deliveries
	dups    int
	bad     []string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, seen: map[string]bot.WebhookEvent{}, order: map[string][]int64{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ts, _ := strconv.ParseInt(req.Header.Get(bot.HeaderTimestamp), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Header.Get(bot.HeaderSignature) != bot.Sign(hookSecret, ts, body) || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		r.bad = append(r.bad, "bad signature: "+string(body))
		w.WriteHeader(401)
		return
	}
	if r.failing.Load() {
		w.WriteHeader(500)
		fmt.Fprint(w, "maintenance")
		return
	}
	var ev bot.WebhookEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != req.Header.Get(bot.HeaderEventID) {
		r.bad = append(r.bad, "bad body: "+string(body))
		w.WriteHeader(400)
		return
	}
	if _, dup := r.seen[ev.ID]; dup {
		r.dups++
		return
	}
	r.seen[ev.ID] = ev
	vs := r.order[ev.Ticket.ID]
	if len(vs) > 0 && ev.Event.Version <= vs[len(vs)-1] {
		r.bad = append(r.bad, fmt.Sprintf("out of order: %s after version %d", ev.ID, vs[len(vs)-1]))
	}
	r.order[ev.Ticket.ID] = append(vs, ev.Event.Version)
}

// versions are the event versions received for a ticket, in order.
func (r *receiver) versions(ticket string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.order[ticket]...)
}

// Every ticket event reaches the receiver exactly once after
// de-duplication, signed, in order per ticket, across a receiver outage
// and a bot restart in the middle; a receiver that stays down ends in the
// dead-letter view while chat goes on.
func TestWebhooksDeliverEveryEventInOrder(t *testing.T) {
	t.Setenv("OPSBOT_HOOK_SECRET", hookSecret)
	recv := newReceiver(t)
	// A receiver down, whose error page echoes the secret: it must not
	// reach the status, the log or the dead letters.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(503)
		fmt.Fprint(w, "bad gateway; configured secret "+hookSecret)
	}))
	t.Cleanup(down.Close)
	statePath := filepath.Join(t.TempDir(), "opsbot.db")
	yaml := fmt.Sprintf(`webhooks:
  - {name: ci, url: %q, secret_env: OPSBOT_HOOK_SECRET, retry_min: 20ms, retry_max: 100ms}
  - {name: siem, url: %q, secret_env: OPSBOT_HOOK_SECRET, flows: [golive], events: [submit, reject], retry_min: 20ms, retry_max: 100ms, give_up_after: 10m}
`, recv.srv.URL, down.URL)
	start := func() *bottest.Kit {
		return bottest.New(t, bottest.WithYAML(yaml), bottest.WithState(fmt.Sprintf("state: {path: %q}", statePath)))
	}
	k := start()
	k.Say("alice", goliveNew)
	k.Say("bob", "/ops approve T-1")
	waitFor(t, "T-1's first events delivered", func() bool { return len(recv.versions("T-1")) >= 2 })

	// The receiver goes down: chat goes on, and the bot stops in the middle.
	recv.failing.Store(true)
	k.Say("alice", `/ops new golive service=orders version=v2 rollback_app=redeploy hotfix=true`)
	k.Say("bob", "/ops reject T-2 not now")
	if r := bottest.Title(k.Say("alice", "/ops show T-2")); !strings.Contains(r, "T-2") {
		t.Fatalf("chat while the receiver is down: %q", r)
	}
	k.Deliver()
	if n := k.Notices("alice"); len(n) == 0 {
		t.Fatal("notifications stopped while the receiver is down")
	}
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	k.Bot.Stop()
	k = start()
	k.Say("alice", `/ops new golive service=billing version=v3 rollback_app=redeploy`)
	recv.failing.Store(false)

	// Every event of every ticket, once, in order.
	for _, id := range []string{"T-1", "T-2", "T-3"} {
		evs, err := k.Bot.Store().Events(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]int64, len(evs))
		for i, e := range evs {
			want[i] = e.Seq
		}
		waitFor(t, id+"'s events delivered", func() bool { return fmt.Sprint(recv.versions(id)) == fmt.Sprint(want) })
	}
	recv.mu.Lock()
	if len(recv.bad) > 0 {
		t.Fatalf("the receiver saw: %v", recv.bad)
	}
	var ev bot.WebhookEvent
	for _, e := range recv.seen {
		if e.Ticket.ID == "T-2" && e.Event.Type == "reject" {
			ev = e
		}
	}
	recv.mu.Unlock()
	if ev.Type != "ticket.reject" || ev.Event.Actor != "bob" || ev.Event.Comment != "not now" || ev.Ticket.Flow != "golive" || ev.Event.To != "rejected" {
		t.Fatalf("the reject event: %+v", ev)
	}

	// The receiver that stays down: its events become dead letters after
	// give_up_after, and the status says so.
	waitFor(t, "failed attempts at siem", func() bool { return strings.Contains(statusOf(k), "failing since") })
	k.Clock.Advance(11 * time.Minute)
	waitFor(t, "siem's dead letters", func() bool { return strings.Contains(statusOf(k), "dead letters: 4") })
	status := statusOf(k)
	for _, want := range []string{"webhook:siem", "T-1.v1 ticket.submit", "T-2.v2 ticket.reject", "503", "/ops webhook retry siem"} {
		if !strings.Contains(status, want) {
			t.Fatalf("the status lacks %q:\n%s", want, status)
		}
	}
	if strings.Contains(status, hookSecret) || strings.Contains(k.LogText(), hookSecret) || !strings.Contains(status, "[REDACTED]") {
		t.Fatalf("the signing secret leaked:\n%s", status)
	}
	if strings.Contains(status, "T-1.v2") {
		t.Fatalf("siem takes submit and reject only:\n%s", status)
	}
	// Chat was never held up.
	if r := bottest.Title(k.Say("alice", "/ops show T-3")); !strings.Contains(r, "T-3") {
		t.Fatalf("chat: %q", r)
	}
	if r := bottest.Text(k.Say("alice", "/ops webhook status")); !strings.Contains(r, "only admins and auditors") {
		t.Fatalf("alice reads the webhook status: %q", r)
	}
}

func statusOf(k *bottest.Kit) string { return bottest.Text(k.Say("root", "/ops webhook status")) }
