package bot

// Feeds deliver the audit log, in order, to other systems: event webhooks
// (each ticket event POSTed as JSON, signed) and the audit stream (every
// entry, to a rotated file and/or an HTTP endpoint). Each feed keeps a
// cursor in the state: what is written to the audit log in a transition's
// own transaction is delivered at least once, in order, across restarts;
// what a receiver keeps refusing past give_up_after becomes a dead letter
// (/ops webhook status) and delivery goes on. Feeds run on the leader, in
// goroutines of their own: a receiver that is down delays nothing else.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/commands"
	"opsbot/flows"
	"opsbot/state"
	"opsbot/templates"
)

// WebhookConfig is one subscription to ticket events.
type WebhookConfig struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// SecretEnv names the variable holding the signing secret.
	SecretEnv string `yaml:"secret_env"`
	// Flows and Events filter (empty: all): flow names, and event types
	// such as submit, approve, reject, cancel, succeed (a step), fail
	// (flows.Events lists them; config check refuses others).
	Flows  []string `yaml:"flows"`
	Events []string `yaml:"events"`
	// GiveUpAfter is how old an event may grow while its delivery fails
	// before it becomes a dead letter (default 24h).
	GiveUpAfter flows.Duration `yaml:"give_up_after"`
	// RetryMin and RetryMax bound the backoff between attempts (default
	// 1s and 5m).
	RetryMin flows.Duration `yaml:"retry_min"`
	RetryMax flows.Duration `yaml:"retry_max"`
}

// AuditStreamConfig streams every audit entry to a file (rotated) and/or
// an HTTP endpoint (signed like webhooks).
type AuditStreamConfig struct {
	File string `yaml:"file"`
	// RotateBytes starts a new file past this size (default 64 MiB);
	// Keep rotated files are kept (default 10).
	RotateBytes int64          `yaml:"rotate_bytes"`
	Keep        int            `yaml:"keep"`
	URL         string         `yaml:"url"`
	SecretEnv   string         `yaml:"secret_env"`
	GiveUpAfter flows.Duration `yaml:"give_up_after"`
	RetryMin    flows.Duration `yaml:"retry_min"`
	RetryMax    flows.Duration `yaml:"retry_max"`
}

// Signature headers: the scheme Slack uses (v0 = HMAC-SHA256 over
// "v0:<timestamp>:<body>"), so receivers can reuse their verifiers.
const (
	HeaderSignature = "X-Opsbot-Signature"
	HeaderTimestamp = "X-Opsbot-Request-Timestamp"
	HeaderEventID   = "X-Opsbot-Event-Id"
	HeaderAttempt   = "X-Opsbot-Delivery-Attempt"
)

// Sign is the signature of body sent at ts with secret.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "v0:%d:", ts)
	m.Write(body)
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

// feed is one reader of the audit log with its sink.
type feed struct {
	name string
	// fromStart: a new feed delivers what the log holds (the audit
	// stream); otherwise it starts at the newest entry (webhooks).
	fromStart bool
	// build turns an entry into a record, or skips it (nil).
	build func(ctx context.Context, a state.AuditEntry) (*record, error)
	// send delivers records in order and says how many it delivered
	// before an error; batch says how many it is given at most (the
	// cursor is written once per batch).
	send               func(ctx context.Context, recs []*record, attempt int) (int, error)
	batch              int
	giveUp, rmin, rmax time.Duration

	mu     sync.Mutex
	status FeedStatus
}

// FeedStatus is what /ops webhook status shows of a feed.
type FeedStatus struct {
	Name         string
	Cursor       uint64
	LastOK       time.Time
	LastErr      string
	Attempts     int
	FailingSince time.Time
}

func (f *feed) setStatus(fn func(s *FeedStatus)) {
	f.mu.Lock()
	fn(&f.status)
	f.mu.Unlock()
}

// Status is a copy of the feed's status.
func (f *feed) Status() FeedStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	s.Name = f.name
	return s
}

// record is one entry as a feed sends it.
type record struct {
	seq    uint64
	at     time.Time // when the audit entry was written
	id     string
	ticket string
	what   string
	body   []byte
}

// feeds are the configured feeds.
func (b *Bot) feeds() []*feed {
	var out []*feed
	for _, w := range b.cfg.Webhooks {
		out = append(out, b.webhookFeed(w))
	}
	s := b.cfg.Audit.Stream
	if s.File != "" {
		out = append(out, b.auditFileFeed(s))
	}
	if s.URL != "" {
		out = append(out, b.auditHTTPFeed(s))
	}
	return out
}

func durOr(d flows.Duration, def time.Duration) time.Duration {
	if d.D() > 0 {
		return d.D()
	}
	return def
}

// WebhookEvent is the JSON a webhook receives for one ticket event.
type WebhookEvent struct {
	// ID identifies the event (ticket and version): the same on every
	// delivery of it, for de-duplication.
	ID     string        `json:"id"`
	Seq    uint64        `json:"seq"`
	Type   string        `json:"type"`
	At     time.Time     `json:"at"`
	Ticket WebhookTicket `json:"ticket"`
	Event  WebhookStep   `json:"event"`
}

// WebhookTicket is the ticket as the event left it.
type WebhookTicket struct {
	ID        string            `json:"id"`
	Flow      string            `json:"flow"`
	Title     string            `json:"title"`
	Stage     string            `json:"stage"`
	Requester string            `json:"requester"`
	Fields    map[string]string `json:"fields"`
}

// WebhookStep is the event itself.
type WebhookStep struct {
	Type    string `json:"type"`
	Actor   string `json:"actor"`
	Display string `json:"display"`
	From    string `json:"from"`
	To      string `json:"to"`
	Comment string `json:"comment,omitempty"`
	Version int64  `json:"version"`
}

func (b *Bot) webhookFeed(w WebhookConfig) *feed {
	f := &feed{name: "webhook:" + w.Name, batch: 32, giveUp: durOr(w.GiveUpAfter, 24*time.Hour),
		rmin: durOr(w.RetryMin, time.Second), rmax: durOr(w.RetryMax, 5*time.Minute)}
	f.build = func(ctx context.Context, a state.AuditEntry) (*record, error) {
		ev, ok := strings.CutPrefix(a.Action, "transition ")
		if !ok || a.Ticket == "" || (len(w.Events) > 0 && !slices.Contains(w.Events, ev)) {
			return nil, nil
		}
		t, e, ok, err := b.store.TicketAt(ctx, a.Ticket, a.Version)
		if err != nil || !ok {
			return nil, err // gone: pruned since
		}
		if len(w.Flows) > 0 && !slices.Contains(w.Flows, t.Flow) {
			return nil, nil
		}
		out := WebhookEvent{ID: fmt.Sprintf("%s.v%d", t.ID, a.Version), Seq: a.Seq, Type: "ticket." + ev, At: a.At,
			Ticket: WebhookTicket{ID: t.ID, Flow: t.Flow, Title: t.Title, Requester: t.Requester, Fields: t.Fields},
			Event: WebhookStep{Type: ev, Actor: a.User, Display: b.displayName(a.User), From: e.From, To: e.To,
				Comment: b.redact.Redact(e.Comment), Version: a.Version}}
		out.Ticket.Stage = e.To
		body, err := json.Marshal(out)
		if err != nil {
			return nil, err
		}
		return &record{seq: a.Seq, at: a.At, id: out.ID, ticket: t.ID, what: out.Type, body: body}, nil
	}
	secret := os.Getenv(w.SecretEnv)
	client := &http.Client{Timeout: 10 * time.Second}
	f.send = func(ctx context.Context, recs []*record, attempt int) (int, error) {
		for i, r := range recs {
			if err := postSigned(ctx, client, w.URL, secret, "application/json", r.body, r.id, attempt); err != nil {
				return i, err
			}
			attempt = 1 // the next record's first attempt
		}
		return len(recs), nil
	}
	return f
}

// postSigned POSTs body with the signature headers; a 2xx is success.
func postSigned(ctx context.Context, client *http.Client, url, secret, ctype string, body []byte, id string, attempt int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "opsbot")
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
	req.Header.Set(HeaderEventID, id)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %d %s", url, resp.StatusCode, strings.TrimSpace(string(snippet)))
	}
	return nil
}

// AuditRecord is one audit entry as the stream carries it: its sequence
// has no gaps, so a receiver sees what it missed; a duplicate (after a
// crash) has the same id.
type AuditRecord struct {
	ID string `json:"id"`
	state.AuditEntry
}

func (b *Bot) auditRecord(_ context.Context, a state.AuditEntry) (*record, error) {
	id := fmt.Sprintf("audit-%d", a.Seq)
	body, err := json.Marshal(AuditRecord{ID: id, AuditEntry: a})
	if err != nil {
		return nil, err
	}
	return &record{seq: a.Seq, at: a.At, id: id, ticket: a.Ticket, what: a.Action, body: body}, nil
}

func (b *Bot) auditFileFeed(s AuditStreamConfig) *feed {
	f := &feed{name: "audit:file", fromStart: true, batch: 256, build: b.auditRecord, giveUp: durOr(s.GiveUpAfter, 24*time.Hour),
		rmin: durOr(s.RetryMin, time.Second), rmax: durOr(s.RetryMax, time.Minute)}
	path := b.cfg.Resolve(s.File)
	rotate, keep := s.RotateBytes, s.Keep
	if rotate <= 0 {
		rotate = 64 << 20
	}
	if keep <= 0 {
		keep = 10
	}
	f.send = func(_ context.Context, recs []*record, _ int) (int, error) {
		if err := appendLines(path, rotate, keep, recs); err != nil {
			return 0, err
		}
		return len(recs), nil
	}
	return f
}

// appendLines appends one JSON line per record and syncs, rotating the
// file first when it has grown past rotate bytes.
func appendLines(path string, rotate int64, keep int, recs []*record) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil && st.Size() >= rotate {
		if err := rotateFiles(path, keep); err != nil {
			return err
		}
	}
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(fh)
	for _, r := range recs {
		w.Write(r.body)
		w.WriteByte('\n')
	}
	err = w.Flush()
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return err
}

// rotateFiles renames path to path.1, path.1 to path.2..., keeping keep.
func rotateFiles(path string, keep int) error {
	os.Remove(fmt.Sprintf("%s.%d", path, keep))
	for i := keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return os.Rename(path, path+".1")
}

func (b *Bot) auditHTTPFeed(s AuditStreamConfig) *feed {
	f := &feed{name: "audit:http", fromStart: true, batch: 256, build: b.auditRecord, giveUp: durOr(s.GiveUpAfter, 24*time.Hour),
		rmin: durOr(s.RetryMin, time.Second), rmax: durOr(s.RetryMax, 5*time.Minute)}
	secret := os.Getenv(s.SecretEnv)
	client := &http.Client{Timeout: 30 * time.Second}
	f.send = func(ctx context.Context, recs []*record, attempt int) (int, error) {
		var body bytes.Buffer
		for _, r := range recs {
			body.Write(r.body)
			body.WriteByte('\n')
		}
		id := fmt.Sprintf("audit-%d-%d", recs[0].seq, recs[len(recs)-1].seq)
		if err := postSigned(ctx, client, s.URL, secret, "application/x-ndjson", body.Bytes(), id, attempt); err != nil {
			return 0, err
		}
		return len(recs), nil
	}
	return f
}

// runFeed delivers one feed until ctx ends (the leader runs it).
func (b *Bot) runFeed(ctx context.Context, f *feed) {
	cursor, _, err := b.store.Cursor(ctx, f.name)
	for err != nil && ctx.Err() == nil {
		b.log.Error("feed cursor", "feed", f.name, "err", err)
		if !sleepCtx(ctx, time.Second) {
			return
		}
		cursor, _, err = b.store.Cursor(ctx, f.name)
	}
	for ctx.Err() == nil {
		entries, err := b.store.AuditAfter(ctx, cursor, 256)
		if err != nil {
			b.log.Error("feed read", "feed", f.name, "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		if len(entries) == 0 {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		var recs []*record
		var upTo []uint64 // the cursor after each record
		for i, a := range entries {
			r, err := f.build(ctx, a)
			if err != nil {
				b.log.Error("feed build", "feed", f.name, "seq", a.Seq, "err", err)
				entries = entries[:i]
				break
			}
			if r != nil {
				recs = append(recs, r)
				upTo = append(upTo, a.Seq)
			}
		}
		if len(entries) == 0 {
			sleepCtx(ctx, time.Second)
			continue
		}
		end := entries[len(entries)-1].Seq
		for len(recs) > 0 && ctx.Err() == nil {
			n := min(f.batch, len(recs))
			dead := b.deliverFeed(ctx, f, recs[:n])
			if ctx.Err() != nil {
				return
			}
			next := upTo[n-1]
			if n == len(recs) {
				next = end
			}
			if err := b.store.SetCursor(ctx, f.name, next, dead...); err != nil {
				b.log.Error("feed cursor", "feed", f.name, "err", err)
				sleepCtx(ctx, time.Second)
				continue
			}
			cursor, recs, upTo = next, recs[n:], upTo[n:]
			f.setStatus(func(s *FeedStatus) { s.Cursor = cursor })
		}
		if len(recs) == 0 && cursor < end {
			if err := b.store.SetCursor(ctx, f.name, end); err == nil {
				cursor = end
			}
		}
	}
}

// deliverFeed sends recs until each is taken or given up on: those come
// back as dead letters.
func (b *Bot) deliverFeed(ctx context.Context, f *feed, recs []*record) []state.DeadLetter {
	var dead []state.DeadLetter
	wait := f.rmin
	first := b.now()
	for attempt := 1; len(recs) > 0; attempt++ {
		done, err := f.send(ctx, recs, attempt)
		if done > 0 {
			recs, attempt, wait = recs[done:], 1, f.rmin
			if b.metrics != nil {
				b.metrics.feedDelivered(f.name, done)
			}
		}
		if err == nil {
			f.setStatus(func(s *FeedStatus) { s.LastOK, s.LastErr, s.Attempts, s.FailingSince = b.now(), "", 0, time.Time{} })
			return dead
		}
		if ctx.Err() != nil {
			return nil
		}
		msg := b.redact.Redact(err.Error())
		f.setStatus(func(s *FeedStatus) {
			s.LastErr, s.Attempts = msg, attempt
			if s.FailingSince.IsZero() {
				s.FailingSince = first
			}
		})
		if b.metrics != nil {
			b.metrics.feedFailed(f.name)
		}
		b.log.Warn("feed delivery failed", "feed", f.name, "event", recs[0].id, "attempt", attempt, "err", msg)
		// A record is given up on once it is older than give_up_after: a
		// receiver down for long falls that far behind, not one event per
		// give_up_after.
		for len(recs) > 0 && b.now().Sub(recs[0].at) >= f.giveUp {
			r := recs[0]
			dead = append(dead, state.DeadLetter{Seq: r.seq, EventID: r.id, Ticket: r.ticket, What: r.what,
				Error: endpoint.Clip(msg, 300), Attempts: attempt, At: b.now()})
			b.log.Error("feed gave up on an event: it is a dead letter (/ops webhook status)", "feed", f.name, "event", r.id, "attempts", attempt)
			recs = recs[1:]
			attempt = 0
		}
		if attempt == 0 {
			continue // the next record's first attempt, now
		}
		if !sleepCtx(ctx, wait) {
			return nil
		}
		wait = min(2*wait, f.rmax)
	}
	return dead
}

// sleepCtx sleeps d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// startFeeds gives each new webhook its starting point before the bot
// serves: it hears every event from its first start on.
func (b *Bot) startFeeds(ctx context.Context) error {
	for _, f := range b.feedList {
		if !f.fromStart {
			if err := b.store.StartCursor(ctx, f.name); err != nil {
				return fmt.Errorf("webhook %s: %w", f.name, err)
			}
		}
	}
	return nil
}

// feedLoop runs every feed while this replica leads.
func (b *Bot) feedLoop(ctx context.Context) {
	done := make(chan struct{})
	n := 0
	for _, f := range b.feedList {
		n++
		go func() { defer func() { done <- struct{}{} }(); b.runFeed(ctx, f) }()
	}
	for range n {
		<-done
	}
}

// webhook answers /ops webhook status|retry (admins and auditors).
func (b *Bot) webhook(ctx context.Context, u state.User, r commands.Webhook) ([]templates.Message, error) {
	if !b.dir.HasRole(u.Name, flows.AdminRole, "auditor") {
		return nil, flows.Userf("not_auditor", "/ops role list", "只有管理员和审计员可以查看推送状态 · only admins and auditors see webhook delivery")
	}
	var names []string
	var fs []*feed
	for _, f := range b.feedList {
		short := strings.TrimPrefix(f.name, "webhook:")
		names = append(names, short)
		if r.Name == "" || r.Name == short || r.Name == f.name {
			fs = append(fs, f)
		}
	}
	if len(b.feedList) == 0 {
		return []templates.Message{info("info", "事件推送 Webhooks", "没有配置推送 · no webhook or audit stream is configured (webhooks: and audit.stream: in the configuration; docs/api.md)")}, nil
	}
	if len(fs) == 0 {
		return nil, flows.Userf("usage", "/ops webhook status "+names[0], "没有推送 %s · no webhook named %q; there are: %s", r.Name, r.Name, strings.Join(names, ", "))
	}
	if r.Op == "retry" {
		if len(fs) != 1 {
			return nil, flows.Userf("usage", "/ops webhook retry "+names[0], "请指定一个推送 · name one webhook to retry")
		}
		f := fs[0]
		dead, err := b.store.RequeueDeadLetters(ctx, f.name)
		if err != nil {
			return nil, err
		}
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.redeliver(context.WithoutCancel(ctx), f, dead) }()
		return []templates.Message{info("success", "重新投递 Retry "+f.name,
			fmt.Sprintf("正在重新投递 %d 条死信 · sending %d dead letters again; those refused once more go back to the dead letters", len(dead), len(dead)))}, nil
	}
	last, err := b.store.LastAuditSeq(ctx)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, f := range fs {
		st := f.Status()
		cursor, _, err := b.store.Cursor(ctx, f.name)
		if err != nil {
			return nil, err
		}
		dead, total, err := b.store.DeadLetters(ctx, f.name, 5)
		if err != nil {
			return nil, err
		}
		lines := []string{fmt.Sprintf("**%s**: 已投递到 delivered up to #%d; 之后的审计条目 audit entries after it: %d", f.name, cursor, last-min(cursor, last))}
		if !st.LastOK.IsZero() {
			lines = append(lines, "上次成功 last delivered: "+templates.Stamp(st.LastOK))
		}
		if st.LastErr != "" {
			lines = append(lines, fmt.Sprintf("⚠️ 失败中 failing since %s, attempt %d: %s", templates.Stamp(st.FailingSince), st.Attempts, st.LastErr))
		}
		lines = append(lines, fmt.Sprintf("死信 dead letters: %d", total))
		for _, d := range dead {
			lines = append(lines, fmt.Sprintf("· %s %s (%d attempts, %s): %s", d.EventID, d.What, d.Attempts, templates.Stamp(d.At), d.Error))
		}
		if total > 0 {
			lines = append(lines, "重新投递 send again: /ops webhook retry "+strings.TrimPrefix(f.name, "webhook:"))
		}
		parts = append(parts, strings.Join(lines, "\n"))
	}
	return []templates.Message{info("info", "事件推送 Webhooks", strings.Join(parts, "\n\n"))}, nil
}

// redeliver sends dead letters once more, in order; what is refused
// again goes back to the dead letters.
func (b *Bot) redeliver(ctx context.Context, f *feed, dead []state.DeadLetter) {
	var again []state.DeadLetter
	for _, d := range dead {
		entries, err := b.store.AuditAfter(ctx, d.Seq-1, 1)
		if err != nil || len(entries) == 0 || entries[0].Seq != d.Seq {
			d.Error = "the audit entry is gone (pruned by audit.retention)"
			again = append(again, d)
			continue
		}
		rec, err := f.build(ctx, entries[0])
		if err == nil && rec != nil {
			_, err = f.send(ctx, []*record{rec}, d.Attempts+1)
		}
		if err != nil {
			d.Error, d.Attempts, d.At = endpoint.Clip(b.redact.Redact(err.Error()), 300), d.Attempts+1, b.now()
			again = append(again, d)
			continue
		}
		if b.metrics != nil {
			b.metrics.feedDelivered(f.name, 1)
		}
	}
	if len(again) > 0 {
		if err := b.store.AddDeadLetters(ctx, f.name, again...); err != nil {
			b.log.Error("keep dead letters", "feed", f.name, "err", err)
		}
	}
}
