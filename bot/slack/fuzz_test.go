package slack

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/commands"
	"opsbot/templates"
)

// fuzzTransport is an HTTP-mode transport whose bot side only records
// what reached it; the Web API points nowhere.
func fuzzTransport(f *testing.F) (*Transport, *[]Input, *sync.Mutex) {
	st := endpoint.NewMemStore()
	var mu sync.Mutex
	var got []Input
	tr := New(Config{Mode: "http", SigningSecret: "fuzz-secret", APIURL: "http://127.0.0.1:1/api/"}, Deps{
		Handle: func(ctx context.Context, in Input) []templates.Message {
			mu.Lock()
			got = append(got, in)
			mu.Unlock()
			return nil
		},
		Form:    func(string) (templates.Form, bool) { return templates.Form{}, false },
		Command: commands.Default().Command,
		Submit: func(context.Context, Input, string, map[string]string) ([]templates.Message, map[string]string) {
			return nil, nil
		},
		Cards: st,
		Inbox: st,
	})
	tr.registerDurable()
	f.Cleanup(tr.Stop)
	return tr, &got, &mu
}

// FuzzSlackInbound sends correctly signed requests with fuzzed bodies to
// each endpoint: the slash-command form, the interaction payload (JSON in
// a form) and the Events API. Nothing may panic, every answer is one of
// the codes Slack understands, and whatever reaches the bot carries the
// user id Slack sent.
func FuzzSlackInbound(f *testing.F) {
	f.Add(0, []byte("command=%2Fops&text=new+golive&user_id=U1&trigger_id=t1&response_url=http%3A%2F%2F127.0.0.1%3A1%2Fr"))
	f.Add(1, []byte(`payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%7D%2C%22actions%22%3A%5B%7B%22value%22%3A%22%2Fops+approve+T-1%2312%22%7D%5D%7D`))
	f.Add(1, []byte(`payload={"type":"view_submission","view":{"callback_id":"reject","private_metadata":"/ops reject T-1\nx","state":{"values":{}}}}`))
	f.Add(2, []byte(`{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention","user":"U1","text":"<@UB> status T-1","channel":"C1","ts":"1.2"}}`))
	f.Add(2, []byte(`{"type":"url_verification","challenge":"x"}`))
	tr, got, mu := fuzzTransport(f)
	h := tr.Handler()
	paths := []string{"/slack/commands", "/slack/interactions", "/slack/events"}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		path := paths[(which%3+3)%3]
		ts := time.Now().Unix()
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Slack-Signature", Sign("fuzz-secret", ts, body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s answered %d to a signed request", path, w.Code)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, in := range *got {
			if in.UserID == "" && in.Text != "" {
				// Slack always names the user; input without one must not
				// reach the bot as someone.
				t.Fatalf("input without a user reached the bot: %+v", in)
			}
		}
		*got = (*got)[:0]
	})
}
