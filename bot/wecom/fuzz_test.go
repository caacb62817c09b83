package wecom

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"opsbot/bot/endpoint"
	"opsbot/templates"
)

type noNetwork struct{}

func (noNetwork) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in the fuzzer")
}

const (
	fuzzCorp  = "wwFUZZCORP00000000"
	fuzzToken = "fuzztoken"
	fuzzAES   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// FuzzWeComCallback feeds the callback endpoint fuzzed envelopes (signed
// over whatever Encrypt they hold, so they get past the signature check
// when they decode) and fuzzed plaintext callbacks sealed as WeCom seals
// them. Nothing may panic; the answer is 200 or 401; whatever reaches
// the bot names its sender.
func FuzzWeComCallback(f *testing.F) {
	old := util.DefaultHTTPClient
	util.DefaultHTTPClient = &http.Client{Transport: noNetwork{}}
	f.Cleanup(func() { util.DefaultHTTPClient = old })
	st := endpoint.NewMemStore()
	var mu sync.Mutex
	var got []Input
	tr := New(Config{CorpID: fuzzCorp, AgentID: "1000002", Token: fuzzToken, EncodingAESKey: fuzzAES},
		Deps{Cards: st, Inbox: st, Scope: func(context.Context, string) (string, string, error) { return "", "", nil }, Handle: func(ctx context.Context, in Input) []templates.Message {
			mu.Lock()
			got = append(got, in)
			mu.Unlock()
			return nil
		}})
	tr.ep.Register("callback", func(ctx context.Context, plain []byte) {
		var cb Callback
		if err := xml.Unmarshal(plain, &cb); err == nil {
			tr.handle(ctx, cb)
		}
	})
	f.Cleanup(tr.Stop)
	h := tr.Handler()
	f.Add(false, []byte(`<xml><ToUserName>x</ToUserName><Encrypt>abc</Encrypt></xml>`))
	f.Add(true, []byte(`<xml><FromUserName>libo</FromUserName><MsgType>text</MsgType><Content>/ops list</Content><MsgId>1</MsgId></xml>`))
	f.Add(true, []byte(`<xml><FromUserName>libo</FromUserName><MsgType>event</MsgType><Event>template_card_event</Event><EventKey>/ops reject T-1#3</EventKey><TaskId>T-1-v3-1-1</TaskId></xml>`))
	f.Add(true, []byte(`<xml><MsgType>text</MsgType><Content>no sender</Content></xml>`))
	n := 0
	f.Fuzz(func(t *testing.T, sealed bool, data []byte) {
		n++
		ts, nonce := fmt.Sprint(time.Now().Unix()), fmt.Sprintf("n%d", n)
		body := data
		var sig string
		var err error
		if sealed {
			body, sig, err = Seal(fuzzCorp, fuzzToken, fuzzAES, ts, nonce, data)
			if err != nil {
				t.Skip()
			}
		} else {
			var env envelope
			_ = xml.Unmarshal(data, &env)
			sig = SignatureOf(fuzzToken, ts, nonce, env.Encrypt)
		}
		req := httptest.NewRequest("POST", fmt.Sprintf("/wecom/callback?msg_signature=%s&timestamp=%s&nonce=%s", sig, ts, nonce), bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK && w.Code != http.StatusUnauthorized {
			t.Fatalf("answered %d", w.Code)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, in := range got {
			if in.UserID == "" {
				t.Fatalf("input without a sender reached the bot: %+v", in)
			}
		}
		got = got[:0]
	})
}
