package bot_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"opsbot/bot/bottest"
)

// FuzzAPI sends fuzzed requests (route, query, body, Idempotency-Key,
// credentials) to the ticket API. Nothing may panic or fail inside
// (5xx); every refusal is JSON with a code and a message; a ticket is
// only created (201) for a token that may.
func FuzzAPI(f *testing.F) {
	f.Add(0, "", `{"flow":"golive","fields":{"service":"payments","version":"v1","rollback_app":"x"}}`, "k1", true)
	f.Add(0, "", `{"flow":"golive","fields":{"service":"payments"}}`, "", true)
	f.Add(0, "", `{"flow":"nope"}`, "k\x00", true)
	f.Add(1, "flow=golive&limit=0&cursor=T-x&open=maybe", "", "", true)
	f.Add(2, "", "", "", false)
	f.Add(3, "until=nowhere&timeout=-1s&after_version=x", "", "", true)
	f.Add(4, "", `{"comment":`, "", true)
	f.Add(5, "", `{"comment":"ok","extra":1}`, "", true)
	k := bottest.New(f, bottest.WithYAML(`api: {listen: "127.0.0.1:0"}
rate_limit: {per_minute: 1000000}`))
	tok, err := k.Bot.CreateAPIToken("fuzz", "alice", "tickets:create", "tickets:read", "tickets:cancel", "tickets:approve")
	if err != nil {
		f.Fatal(err)
	}
	h := k.Bot.APIHandler()
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/tickets"}, {"GET", "/api/v1/tickets"}, {"GET", "/api/v1/tickets/T-1"},
		{"GET", "/api/v1/tickets/T-1/wait"}, {"POST", "/api/v1/tickets/T-1/cancel"}, {"POST", "/api/v1/tickets/T-1/approve"},
	}
	f.Fuzz(func(t *testing.T, route int, query, body, key string, auth bool) {
		rt := routes[uint(route)%uint(len(routes))]
		target := rt.path + "?"
		if strings.HasSuffix(rt.path, "/wait") {
			target += "timeout=10ms&" // the first value counts: a wait answers quickly
		}
		target += strings.NewReplacer(" ", "%20", "#", "%23", "\n", "", "\r", "").Replace(query)
		req, err := http.NewRequest(rt.method, "http://api"+target, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if key != "" && !strings.ContainsAny(key, "\r\n\x00") {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, target, body, w.Code, w.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("not JSON: %d %s", w.Code, w.Body)
		}
		if w.Code >= 400 {
			e, _ := out["error"].(map[string]any)
			if e["code"] == "" || e["message"] == "" {
				t.Fatalf("a refusal without code or message: %s", w.Body)
			}
		}
		if w.Code == 201 && !auth {
			t.Fatal("created without a token")
		}
	})
}
