// Package endpoint is the plumbing every chat platform's inbound side
// shares: an HTTP listener, work that continues after the fast ack (on a
// context that Stop cancels and waits for), and pacing of outbound
// messages per channel or member.
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
)

// WorkTimeout bounds the work after one ack.
const WorkTimeout = 2 * time.Minute

// Server runs one platform's endpoint and its background work.
type Server struct {
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	srv    *http.Server
	addr   string
}

// New returns a stopped server.
func New(log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{log: log, ctx: ctx, cancel: cancel}
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
