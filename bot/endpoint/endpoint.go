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
	"sync"
	"time"

	"opsbot/state"
)

// WorkTimeout bounds the work after one ack.
const WorkTimeout = 2 * time.Minute

// Server runs one platform's endpoint and its background work.
type Server struct {
	log      *slog.Logger
	store    *state.Store
	platform string
	handlers map[string]func(ctx context.Context, payload []byte)
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	srv      *http.Server
	addr     string
}

// New returns a stopped server for platform; store keeps durable input.
func New(log *slog.Logger, store *state.Store, platform string) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{log: log, store: store, platform: platform, ctx: ctx, cancel: cancel,
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
func (s *Server) Durable(kind string, payload []byte) {
	handle := s.handlers[kind]
	if handle == nil {
		s.log.Error("no handler for durable input", "kind", kind)
		return
	}
	id, err := s.store.AddInbound(s.ctx, state.Inbound{Platform: s.platform, Kind: kind, Payload: payload, At: time.Now()})
	if err != nil {
		s.log.Error("could not record input before acknowledging it", "kind", kind, "err", err)
	}
	s.Go(func(ctx context.Context) {
		handle(ctx, payload)
		if id != 0 {
			s.done(ctx, id)
		}
	})
}

// done forgets handled input, unless a shutdown cut the handling short:
// then it is replayed at the next start.
func (s *Server) done(ctx context.Context, id uint64) {
	if s.ctx.Err() != nil {
		return
	}
	if err := s.store.DoneInbound(context.WithoutCancel(ctx), id); err != nil {
		s.log.Error("forget handled input", "err", err)
	}
}

// Replay handles input recorded by a previous process that stopped before
// handling it.
func (s *Server) Replay(ctx context.Context) error {
	pending, err := s.store.PendingInbound(ctx, s.platform)
	if err != nil {
		return err
	}
	for _, in := range pending {
		handle := s.handlers[in.Kind]
		if handle == nil {
			s.log.Error("dropping recorded input of an unknown kind", "kind", in.Kind)
			_ = s.store.DoneInbound(ctx, in.ID)
			continue
		}
		s.log.Info("handling input received before a restart", "kind", in.Kind, "at", in.At)
		s.Go(func(ctx context.Context) {
			handle(ctx, in.Payload)
			s.done(ctx, in.ID)
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
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
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
