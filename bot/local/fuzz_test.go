package local

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"opsbot/state"
	"opsbot/templates"
)

// FuzzLocalAPI posts fuzzed bodies to the local chat's command and click
// endpoints. Nothing may panic; a body is either answered 200 for a user
// whose name passes the same checks as every stored name, or refused 400
// with a message saying what to send.
func FuzzLocalAPI(f *testing.F) {
	f.Add(false, []byte(`{"user":"alice","text":"/ops help"}`))
	f.Add(true, []byte(`{"user":"ALICE ","text":"/ops approve T-1#3"}`))
	f.Add(false, []byte(`{"user":"alice\u0000zz","text":"x"}`))
	f.Add(false, []byte(`{"user":"ａｌｉｃｅ","text":"x"}`))
	f.Add(false, []byte(`not json`))
	var users []string
	tr := New(Config{Name: stateName, Users: func() []User { return nil }, Handle: func(ctx context.Context, in Input) []templates.Message {
		users = append(users, in.User)
		return []templates.Message{{Title: "ok"}}
	}})
	h := tr.Handler()
	f.Fuzz(func(t *testing.T, click bool, body []byte) {
		path := "/api/command"
		if click {
			path = "/api/click"
		}
		users = users[:0]
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200:
			if len(users) != 1 {
				t.Fatalf("200 without handling: %v", users)
			}
			if err := state.CheckName("user", users[0]); err != nil || users[0] != state.NormName(users[0]) {
				t.Fatalf("user %q reached the bot: %v", users[0], err)
			}
		case 413: // more than a command can be
			if len(users) != 0 || !bytes.Contains(w.Body.Bytes(), []byte("at most")) {
				t.Fatalf("an oversized body was handled or its refusal states no limit: %s", w.Body)
			}
		case 400, 429: // malformed, or more people than the page takes
			if len(users) != 0 || !bytes.Contains(w.Body.Bytes(), []byte("alice")) {
				t.Fatalf("a refusal handled input or does not show an example: %s", w.Body)
			}
		default:
			t.Fatalf("answered %d", w.Code)
		}
	})
}

// Each new name is a new user and inbox: their number is bounded.
func TestLocalUsersAreBounded(t *testing.T) {
	tr := New(Config{Name: stateName, MaxUsers: 3, Users: func() []User { return nil },
		Handle: func(ctx context.Context, in Input) []templates.Message { return nil }})
	h := tr.Handler()
	post := func(user string) int {
		req := httptest.NewRequest("POST", "/api/command", bytes.NewReader([]byte(`{"user":"`+user+`","text":"/ops help"}`)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for _, u := range []string{"u1", "u2", "u3"} {
		if code := post(u); code != 200 {
			t.Fatalf("%s: %d", u, code)
		}
	}
	if code := post("u4"); code != 429 {
		t.Fatalf("a fourth person: %d, want 429", code)
	}
	if code := post("u2"); code != 200 {
		t.Fatalf("a known person: %d", code)
	}
}

// stateName is the rule the bot gives the transport: the state's.
func stateName(s string) (string, error) {
	n := state.NormName(s)
	return n, state.CheckName("user", n)
}

// memHistory keeps what the transport hands to History.
type memHistory struct {
	kept map[int64]Stored
}

func (h *memHistory) Load(ctx context.Context) ([]Stored, error) {
	var out []Stored
	for id := int64(0); id < 100; id++ {
		if s, ok := h.kept[id]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (h *memHistory) Save(ctx context.Context, put, drop []Stored) error {
	for _, s := range put {
		if old, ok := h.kept[s.Entry.ID]; !ok || old.Entry.Rev < s.Entry.Rev {
			h.kept[s.Entry.ID] = s
		}
	}
	for _, s := range drop {
		delete(h.kept, s.Entry.ID)
	}
	return nil
}

// The kept history is bounded like the inbox: what falls out of an inbox
// is dropped from the store too; a new transport reads back what is left,
// with revisions going on from there.
func TestLocalHistoryIsBoundedAndRestored(t *testing.T) {
	h := &memHistory{kept: map[int64]Stored{}}
	tr := New(Config{Name: stateName, MaxInbox: 3, History: h})
	for i := range 5 {
		if err := tr.Send(t.Context(), "alice", templates.Message{Title: fmt.Sprint("n", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(h.kept) != 3 {
		t.Fatalf("kept %d entries, want 3: %+v", len(h.kept), h.kept)
	}
	again := New(Config{Name: stateName, MaxInbox: 3, History: h})
	if err := again.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, rev := again.Inbox("alice", 0)
	if len(got) != 3 || got[0].Msg.Title != "n2" || got[2].Msg.Title != "n4" || rev != 5 {
		t.Fatalf("restored %+v at rev %d", got, rev)
	}
	again.Send(t.Context(), "alice", templates.Message{Title: "n5"})
	if got, _ := again.Inbox("alice", 5); len(got) != 1 || got[0].ID != 6 {
		t.Fatalf("a new entry after the restore: %+v", got)
	}
	// Written in the background; Close writes what is left.
	again.Close()
	if s, ok := h.kept[6]; !ok || s.Entry.Msg.Title != "n5" || len(h.kept) != 3 {
		t.Fatalf("after Close the store keeps %+v", h.kept)
	}
}
