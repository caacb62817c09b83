package local

import (
	"bytes"
	"context"
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
	tr := New(Config{Name: stateName, Users: func() []User { return nil }, Handle: func(ctx context.Context, user, text string, click bool) []templates.Message {
		users = append(users, user)
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
		Handle: func(ctx context.Context, user, text string, click bool) []templates.Message { return nil }})
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
