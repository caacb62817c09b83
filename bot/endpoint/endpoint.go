// Package endpoint is the plumbing every chat platform's inbound side
// shares: an HTTP listener, work that continues after the fast ack (on a
// context that Stop cancels and waits for), input made durable before the
// ack and replayed after a restart, and pacing of outbound messages per
// channel or member.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// WorkTimeout bounds the work after one ack.
const WorkTimeout = 2 * time.Minute

// ReplayTTL is how long a delivery's signature is remembered to refuse a
// replay: well past the five-minute freshness window every platform
// enforces plus the platforms' retry horizons (Slack and WeCom retry for
// minutes, not hours), so a captured request is refused either as stale
// or as seen.
const ReplayTTL = 24 * time.Hour

// Freshness is how far a signed request's timestamp may be from now.
const Freshness = 5 * time.Minute

// Timeouts bound every HTTP server: reading a whole request (headers and
// body, so a client trickling a body cannot hold a connection), writing
// the answer, and an idle keep-alive connection.
type Timeouts struct {
	Read, Write, Idle time.Duration
}

// MaxHeaderBytes bounds request headers on every server (Go's default is
// 1 MiB); a larger header block gets 431 before any handler runs.
const MaxHeaderBytes = 64 << 10

// NewHTTPServer returns a server for h with the timeouts and header limit
// set; requests' contexts derive from base, so cancelling base ends long
// polls at shutdown.
func NewHTTPServer(h http.Handler, to Timeouts, base context.Context) *http.Server {
	if to.Read <= 0 {
		to.Read = 30 * time.Second
	}
	if to.Write <= 0 {
		to.Write = 60 * time.Second
	}
	if to.Idle <= 0 {
		to.Idle = 120 * time.Second
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: min(5*time.Second, to.Read), ReadTimeout: to.Read,
		WriteTimeout: to.Write, IdleTimeout: to.Idle, MaxHeaderBytes: MaxHeaderBytes,
		BaseContext: func(net.Listener) context.Context { return base }}
}

// Refusal is a request refused at the edge, before any handling.
type Refusal struct {
	Platform string
	// Remote is the client's address.
	Remote string
	// Action names what was asked, e.g. "POST /slack/commands".
	Action string
	// Class is the reason's kind: signature, freshness, replay, malformed,
	// too_large, host, origin, content_type, token, off.
	Class string
	// Reason is the detail; the receiver truncates it.
	Reason string
}

// Refuser records refusals (sampled and bounded by the bot).
type Refuser func(ctx context.Context, r Refusal)

// Server runs one platform's endpoint and its background work.
type Server struct {
	log      *slog.Logger
	inbox    Inbox
	platform string
	handlers map[string]func(ctx context.Context, payload []byte)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	srv      *http.Server
	addr     string
	timeouts Timeouts
	now      func() time.Time
}

// New returns a stopped server for platform; inbox keeps durable input.
func New(log *slog.Logger, inbox Inbox, platform string, to Timeouts, now func() time.Time) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	if now == nil {
		now = time.Now
	}
	return &Server{log: log, inbox: inbox, platform: platform, ctx: ctx, cancel: cancel, timeouts: to, now: now,
		handlers: map[string]func(context.Context, []byte){}}
}

// Register names the handler that durable input of kind goes to. Register
// every kind before Replay.
func (s *Server) Register(kind string, handle func(ctx context.Context, payload []byte)) {
	s.handlers[kind] = handle
}

// Durable records input of kind before the caller acknowledges it, then
// handles it in the background and forgets it once handled. A bot that
// stops in between handles it at Replay. If it cannot be recorded, it is
// handled anyway (and logged): refusing would make the platform retry.
// With a replay key (the delivery's signature), input seen before is
// neither recorded nor handled, and Durable returns false.
func (s *Server) Durable(kind string, payload []byte, replayKey string) bool {
	handle := s.handlers[kind]
	if handle == nil {
		s.log.Error("no handler for durable input", "kind", kind)
		return true
	}
	if replayKey != "" {
		replayKey = s.platform + ":replay:" + replayKey
	}
	id, dup, err := s.inbox.Record(s.ctx, kind, payload, replayKey, s.now(), ReplayTTL)
	if dup {
		return false
	}
	if err != nil {
		s.log.Error("could not record input before acknowledging it", "kind", kind, "err", err)
	}
	s.Go(func(ctx context.Context) {
		if id != 0 {
			ctx = s.inbox.Handling(ctx, id)
		}
		handle(ctx, payload)
		if id != 0 && !s.inbox.Forgotten(ctx) {
			s.done(ctx, id)
		}
	})
	return true
}

// Replayed remembers a delivery's signature that is handled without being
// recorded, and reports whether it was seen before. If the key cannot be
// stored, the delivery is taken as new (and logged).
func (s *Server) Replayed(key string) bool {
	if key == "" {
		return false
	}
	seen, err := s.inbox.Remember(s.ctx, s.platform+":replay:"+key, s.now(), ReplayTTL)
	if err != nil {
		s.log.Error("remember a delivery's signature", "err", err)
	}
	return seen
}

// done forgets handled input, unless a shutdown cut the handling short:
// then it is replayed at the next start.
func (s *Server) done(ctx context.Context, id uint64) {
	if s.ctx.Err() != nil {
		return
	}
	if err := s.inbox.Done(context.WithoutCancel(ctx), id); err != nil {
		s.log.Error("forget handled input", "err", err)
	}
}

// Replay handles input recorded by a previous process that stopped before
// handling it.
func (s *Server) Replay(ctx context.Context) error {
	pending, err := s.inbox.Pending(ctx)
	if err != nil {
		return err
	}
	for _, in := range pending {
		handle := s.handlers[in.Kind]
		if in.Err != nil {
			s.log.Error("dropping recorded input that cannot be opened", "kind", in.Kind, "at", in.At, "err", in.Err)
			_ = s.inbox.Done(ctx, in.ID)
			continue
		}
		if handle == nil {
			s.log.Error("dropping recorded input of an unknown kind", "kind", in.Kind)
			_ = s.inbox.Done(ctx, in.ID)
			continue
		}
		s.log.Info("handling input received before a restart", "kind", in.Kind, "at", in.At)
		s.Go(func(ctx context.Context) {
			ctx = s.inbox.Handling(ctx, in.ID)
			handle(ctx, in.Payload)
			if !s.inbox.Forgotten(ctx) {
				s.done(ctx, in.ID)
			}
		})
	}
	return nil
}

// Context is cancelled by Stop; long-running loops (Socket Mode) use it.
func (s *Server) Context() context.Context { return s.ctx }

// Listen serves h on addr in the background.
func (s *Server) Listen(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = NewHTTPServer(h, s.timeouts, s.ctx)
	s.Loop(func(context.Context) {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("endpoint stopped", "addr", s.addr, "err", err)
		}
	})
	return nil
}

// Addr is the listening address, once Listen succeeded.
func (s *Server) Addr() string { return s.addr }

// Loop runs fn until Stop; fn must return when its context ends.
func (s *Server) Loop(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.ctx)
	}()
}

// Go runs work after an ack, within WorkTimeout.
func (s *Server) Go(work func(ctx context.Context)) {
	if work == nil {
		return
	}
	s.Loop(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, WorkTimeout)
		defer cancel()
		work(ctx)
	})
}

// Stop stops accepting requests, cancels background work and waits for it.
func (s *Server) Stop() {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.srv.Shutdown(ctx)
		cancel()
	}
	s.cancel()
	s.wg.Wait()
}

// Fresh checks a signed request's timestamp (Unix seconds) against now.
func Fresh(ts string, now time.Time) error {
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q is not a number", Clip(ts, 32))
	}
	d := now.Sub(time.Unix(n, 0))
	if d > Freshness || d < -Freshness {
		return fmt.Errorf("timestamp %s is %s away from now; requests older or newer than %s are refused",
			time.Unix(n, 0).UTC().Format(time.RFC3339), d.Round(time.Second), Freshness)
	}
	return nil
}

// Clip shortens s to at most n bytes (on a rune boundary) for a log line
// or audit entry, saying how much was cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := CutIndex(s, n)
	return fmt.Sprintf("%s…(+%d bytes)", s[:cut], len(s)-cut)
}

// CutIndex is where to cut s to keep at most n bytes without splitting a
// UTF-8 sequence.
func CutIndex(s string, n int) int {
	if len(s) <= n {
		return len(s)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return cut
}

// RemoteHost is the client's IP address without the port.
func RemoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return Clip(r.RemoteAddr, 64)
	}
	return host
}

// Pacer spaces messages: Allow says whether key may send now and, if not,
// how long to wait.
type Pacer interface {
	Allow(ctx context.Context, key string) (bool, time.Duration)
}

// Wait blocks until p lets key send (a nil p never waits).
func Wait(ctx context.Context, p Pacer, key string) error {
	if p == nil {
		return nil
	}
	for {
		ok, wait := p.Allow(ctx, key)
		if ok {
			return nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
