// Package bottest is a test kit that drives a whole opsbot through its
// local chat: a real bbolt file in a temp dir, real scripts, the real HTTP
// API on a loopback port, and an injectable clock.
package bottest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/local"
	"opsbot/state"
	"opsbot/templates"
)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at a fixed time.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 5, 9, 10, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Scripts are written into every kit's scripts directory. Each appends a
// line to runs.log, so tests can count how often a side effect ran.
var Scripts = map[string]string{
	"deploy.sh": `#!/bin/sh
echo "deploy $OPSBOT_TICKET attempt $OPSBOT_ATTEMPT" >> runs.log
if [ -f hold ]; then while [ -f hold ]; do sleep 0.05; done; fi
if [ -f fail ]; then echo "deploy failed: disk full"; exit 3; fi
if [ -f tempfail ] && [ "$OPSBOT_ATTEMPT" -lt 2 ]; then echo "registry busy"; exit 75; fi
echo "deployed $OPSBOT_FIELD_SERVICE $OPSBOT_FIELD_VERSION"
echo "OPSBOT_SET deployed_version=$OPSBOT_FIELD_VERSION"
`,
	"rollback.sh": `#!/bin/sh
echo "rollback $OPSBOT_TICKET from $OPSBOT_OUT_DEPLOYED_VERSION" >> runs.log
echo "rolled back from $OPSBOT_OUT_DEPLOYED_VERSION"
`,
	"check.sh": `#!/bin/sh
echo "check $OPSBOT_TICKET" >> runs.log
if [ -f ready ]; then echo "resolves"; exit 0; fi
echo "not yet"; exit 1
`,
	"restart.sh": `#!/bin/sh
echo "restart $OPSBOT_TICKET attempt $OPSBOT_ATTEMPT" >> runs.log
if [ -f hold ]; then while [ -f hold ]; do sleep 0.05; done; fi
echo restarted
`,
}

// Users is the kit's directory: alice requests, bob is tech lead, carol
// and cathy test, dave is ops and DBA, erin is director, root is admin.
const Users = `
users:
  - {name: alice, roles: [developer], email: alice@example.com, ids: {wecom: wangxiaoli}}
  - {name: bob, roles: [techlead], ids: {slack: U0BOB, wecom: libo}}
  - {name: bert, roles: [techlead]}
  - {name: carol, roles: [tester], email: carol@example.com, ids: {wecom: chenke}}
  - {name: cathy, roles: [tester]}
  - {name: dave, roles: [ops, dba], email: Dave@Example.com, ids: {wecom: zhaodawei}}
  - {name: erin, roles: [director]}
  - {name: ivan, roles: [infra]}
  - {name: petra, roles: [publisher]}
  - {name: root, roles: [admin]}
`

// AdminTokenEnv holds AdminToken for every kit's admin API (and the CLI
// the tests run against it).
const (
	AdminTokenEnv = "OPSBOT_TEST_ADMIN_TOKEN"
	AdminToken    = "test-admin-token-0123456789abcdef"
)

func init() { os.Setenv(AdminTokenEnv, AdminToken) }

// Kit is a running bot under test.
type Kit struct {
	T     testing.TB
	Bot   *bot.Bot
	Clock *Clock
	Dir   string
	URL   string
	Log   *SyncBuffer
	Cfg   *bot.Config
}

// Option changes the kit's setup.
type Option func(*setup)

type setup struct {
	yaml   string
	listen string
	state  string
	opts   bot.Options
}

// WithState replaces the kit's state: line (e.g. the etcd backend).
func WithState(y string) Option { return func(s *setup) { s.state = y } }

// WithListen serves on addr instead of a free port (a bot started again
// where a browser still has its page open).
func WithListen(addr string) Option { return func(s *setup) { s.listen = addr } }

// WithYAML appends configuration (flows, redis, rate limits...).
func WithYAML(y string) Option { return func(s *setup) { s.yaml += "\n" + y } }

// WithTransport adds a chat transport besides the local chat.
func WithTransport(t bot.Transport) Option {
	return func(s *setup) { s.opts.Transports = append(s.opts.Transports, t) }
}

// ConfigYAML is the configuration a kit in dir runs with.
func ConfigYAML(dir, extra string) string {
	if !strings.Contains(extra, "rate_limit:") {
		extra += "\nrate_limit: {per_minute: 100000, burst: 10000}"
	}
	if !strings.Contains(extra, "\nadmin:") {
		extra += "\nadmin: {token_env: " + AdminTokenEnv + "}"
	}
	if !strings.Contains(extra, "\nlocal:") {
		// The kit drives every bot through the local chat, also when Slack
		// or WeCom is on.
		extra += "\nlocal: {enabled: true}"
	}
	return fmt.Sprintf("listen: 127.0.0.1:0\ntime_zone: UTC\nstate: {path: %q}\nscripts: {dir: %q}\noutbox: {retry_min: 1s, retry_max: 1m}\n%s\n%s",
		filepath.Join(dir, "opsbot.db"), filepath.Join(dir, "scripts"), Users, extra)
}

// WriteScripts puts the kit's scripts into dir/scripts.
func WriteScripts(t testing.TB, dir string) {
	sd := filepath.Join(dir, "scripts")
	if err := os.MkdirAll(sd, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range Scripts {
		if err := os.WriteFile(filepath.Join(sd, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// New starts a bot in a fresh temp dir and stops it when the test ends.
func New(t testing.TB, opts ...Option) *Kit {
	t.Helper()
	return Start(t, t.TempDir(), NewClock(), opts...)
}

// Start starts a bot on dir (keeping any state already there).
func Start(t testing.TB, dir string, clock *Clock, opts ...Option) *Kit {
	t.Helper()
	s := &setup{}
	for _, o := range opts {
		o(s)
	}
	WriteScripts(t, dir)
	y := ConfigYAML(dir, s.yaml)
	if s.listen != "" {
		y = strings.Replace(y, "listen: 127.0.0.1:0\n", "listen: "+s.listen+"\n", 1)
	}
	if s.state != "" {
		y = strings.Replace(y, fmt.Sprintf("state: {path: %q}", filepath.Join(dir, "opsbot.db")), s.state, 1)
	}
	cfg, err := bot.ParseConfig([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &SyncBuffer{}
	k := &Kit{T: t, Clock: clock, Dir: dir, Cfg: cfg, Log: logBuf}
	o := s.opts
	o.Config = cfg
	o.Now = clock.Now
	o.Log = slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.TickEvery = time.Hour // tests fire timers with Tick
	o.ShutdownGrace = 2 * time.Second
	b, err := bot.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	k.Bot, k.URL = b, "http://"+b.Addr()
	t.Cleanup(b.Stop)
	return k
}

// SyncBuffer collects output written from several goroutines (a bot's
// log, a child process's output) while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// LogText returns what the bot logged so far.
func (k *Kit) LogText() string { return k.Log.String() }

// Say types text as user through the local chat's HTTP API.
func (k *Kit) Say(user, text string) []templates.Message { return k.post("/api/command", user, text) }

// Click presses a button (its value) as user.
func (k *Kit) Click(user, value string) []templates.Message { return k.post("/api/click", user, value) }

func (k *Kit) post(path, user, text string) []templates.Message {
	k.T.Helper()
	out, err := Post(k.URL+path, user, text)
	if err != nil {
		k.T.Fatal(err)
	}
	return out
}

// Post sends text as user to a bot's local API at url (".../api/command"
// or ".../api/click") and returns the replies: for a bot in a process of
// its own, which a test may kill at any moment.
func Post(url, user, text string) ([]templates.Message, error) {
	body, _ := json.Marshal(local.CommandRequest{User: user, Text: text})
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out local.CommandResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode the reply of %s: %w", url, err)
	}
	return out.Replies, nil
}

// Ticket reads a ticket from the store.
func (k *Kit) Ticket(id string) state.Ticket {
	k.T.Helper()
	t, err := k.Bot.Store().Get(context.Background(), id)
	if err != nil {
		k.T.Fatal(err)
	}
	return t
}

// WaitStage waits (real time, up to 15s) for a ticket to exist and reach stage.
func (k *Kit) WaitStage(id, stage string) state.Ticket {
	k.T.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		t, err := k.Bot.Store().Get(context.Background(), id)
		if err == nil && t.Stage == stage {
			return t
		}
		if time.Now().After(deadline) {
			k.T.Fatalf("%s is %q (%v), want %s; note %q results %+v", id, t.Stage, err, stage, t.Note, t.Results)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Deliver flushes the outbox now.
func (k *Kit) Deliver() {
	k.T.Helper()
	if _, err := k.Bot.DeliverDue(context.Background()); err != nil {
		k.T.Fatal(err)
	}
}

// Inbox returns the messages in user's local chat inbox, after delivering
// the outbox.
func (k *Kit) Inbox(user string) []local.Entry {
	k.Deliver()
	e, _ := k.Bot.Local().Inbox(user, 0)
	return e
}

// Notices returns the titles of the notifications user received.
func (k *Kit) Notices(user string) []string {
	var out []string
	for _, e := range k.Inbox(user) {
		if e.Kind == "notice" {
			out = append(out, e.Msg.Title)
		}
	}
	return out
}

// Runs returns the lines the kit's scripts appended to runs.log.
func (k *Kit) Runs() []string { return Runs(k.Dir) }

// Runs reads dir/scripts/runs.log.
func Runs(dir string) []string {
	data, _ := os.ReadFile(filepath.Join(dir, "scripts", "runs.log"))
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Touch creates a control file (hold, fail, tempfail) in the scripts dir.
func (k *Kit) Touch(name string) {
	if err := os.WriteFile(filepath.Join(k.Dir, "scripts", name), nil, 0o644); err != nil {
		k.T.Fatal(err)
	}
}

// Remove deletes a control file.
func (k *Kit) Remove(name string) { os.Remove(filepath.Join(k.Dir, "scripts", name)) }

// Title returns the first reply's title, for compact assertions.
func Title(msgs []templates.Message) string {
	if len(msgs) == 0 {
		return ""
	}
	return msgs[0].Title
}

// Text is every reply's title, fields, body and context, one per line.
func Text(msgs []templates.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Title + "\n")
		for _, f := range m.Fields {
			b.WriteString(f.Label + ": " + f.Value + "\n")
		}
		b.WriteString(m.Body + "\n" + m.Context + "\n")
	}
	return b.String()
}

// Button finds a button on the card with the label prefix.
func Button(m templates.Message, label string) (templates.Button, bool) {
	for _, b := range m.Buttons {
		if strings.Contains(b.Label, label) {
			return b, true
		}
	}
	return templates.Button{}, false
}

// Card returns the reply that is a ticket card.
func Card(msgs []templates.Message) templates.Message {
	for _, m := range msgs {
		if m.Kind == "ticket" {
			return m
		}
	}
	return templates.Message{}
}
