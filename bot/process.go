package bot

// The process: start the listeners and transports, run the job runner,
// timers, outbox and retention loops, and stop them in order.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"opsbot/bot/endpoint"
	"opsbot/state"
	"os"
	"slices"
	"time"
)

// Start settles jobs left by a previous process, starts listening and
// starts the background loops. It returns once the bot is serving.
func (b *Bot) Start(ctx context.Context) error {
	if err := b.engine.Recover(ctx); err != nil {
		return fmt.Errorf("recover jobs: %w", err)
	}
	if lc := b.Local(); lc != nil {
		if err := lc.Restore(ctx); err != nil {
			return fmt.Errorf("local chat history: %w", err)
		}
	}
	ln, err := net.Listen("tcp", b.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", b.cfg.Listen, err)
	}
	b.addr = ln.Addr().String()
	for _, t := range b.trans {
		l, ok := t.(Listener)
		if !ok {
			continue
		}
		if err := l.Start(ctx); err != nil {
			b.stopListeners()
			ln.Close()
			return fmt.Errorf("start %s: %w", t.Platform(), err)
		}
		b.listeners = append(b.listeners, l)
	}
	b.initLabels()
	if err := b.startFeeds(ctx); err != nil {
		b.stopListeners()
		ln.Close()
		return err
	}
	if err := b.serveOps(ctx); err != nil {
		b.stopListeners()
		ln.Close()
		return fmt.Errorf("ops.listen %s: %w", b.cfg.Ops.Listen, err)
	}
	httpCtx, httpStop := context.WithCancel(context.WithoutCancel(ctx))
	b.httpStop = httpStop
	if err := b.serveAPI(httpCtx); err != nil {
		b.stopListeners()
		ln.Close()
		return fmt.Errorf("api.listen %s: %w", b.cfg.API.Listen, err)
	}
	b.srv = endpoint.NewHTTPServer(b.handler(), b.timeouts(), httpCtx)
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	b.wg.Add(11)
	go func() { defer b.wg.Done(); b.whileLeader(bg, b.feedLoop) }()
	go func() { defer b.wg.Done(); b.replica.Run(bg) }()
	go func() { defer b.wg.Done(); b.probeLoop(bg) }()
	go func() { defer b.wg.Done(); b.audit.run(bg) }()
	go func() { defer b.wg.Done(); b.refusals.run(bg) }()
	// One replica at a time fires the timers, delivers the outbox, keeps
	// the retention and settles the work of replicas that died; every
	// replica serves chat and runs the jobs it claims.
	go func() { defer b.wg.Done(); b.whileLeader(bg, b.retentionLoop) }()
	go func() { defer b.wg.Done(); b.whileLeader(bg, b.orphanLoop) }()
	go func() {
		defer b.wg.Done()
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("local chat server stopped", "err", err)
		}
	}()
	go func() { defer b.wg.Done(); b.runner.Run(bg, b.grace) }()
	go func() { defer b.wg.Done(); b.whileLeader(bg, b.deliverLoop) }()
	go func() { defer b.wg.Done(); b.whileLeader(bg, b.timerLoop) }()
	for _, w := range b.cfg.Warnings() {
		b.log.Warn("config: " + w)
	}
	if b.Local() != nil {
		b.log.Info("opsbot serving", "local_chat", "http://"+b.addr, "state", b.store.Path())
	} else {
		b.log.Info("opsbot serving; the local chat is off (a chat platform is enabled)", "admin", "http://"+b.addr+"/admin/", "state", b.store.Path())
	}
	return nil
}

// stopListeners stops the transports' inbound sides, last started first.
func (b *Bot) stopListeners() {
	for i := len(b.listeners) - 1; i >= 0; i-- {
		b.listeners[i].Stop()
	}
	b.listeners = nil
}

// timeouts are the HTTP limits every server of this bot uses.
func (b *Bot) timeouts() endpoint.Timeouts {
	h := b.cfg.HTTP
	return endpoint.Timeouts{Read: h.ReadTimeout.D(), Write: h.WriteTimeout.D(), Idle: h.IdleTimeout.D()}
}

// handler is the loopback listener: /healthz, the admin API behind its
// token, and the local chat when it is on, all behind the loopback guard.
func (b *Bot) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", b.healthz)
	mux.Handle("/admin/", adminAuth(os.Getenv(b.cfg.Admin.TokenEnv), b.cfg.Admin.TokenEnv, b.adminHandler(), b.refusals.Refuse))
	if lc := b.Local(); lc != nil {
		mux.Handle("/", lc.Handler())
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeJSONReply(w, http.StatusNotFound, map[string]string{"error": "the local chat is off because a chat platform is enabled; " +
				"set local.enabled: true to use it (development only: it has no login)"})
		})
	}
	return guard(mux, b.refusals.Refuse)
}

// whileLeader runs loop while this replica leads (on bbolt: always),
// stopping it when the leadership is lost and starting it again when it
// is won back, until ctx ends.
func (b *Bot) whileLeader(ctx context.Context, loop func(context.Context)) {
	for ctx.Err() == nil {
		if !b.replica.Leader() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer cancel()
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
					if !b.replica.Leader() {
						return
					}
				}
			}
		}()
		loop(lctx)
		close(done)
		cancel()
		// A loop that ended by itself (nothing to do on this backend)
		// starts again only after the leadership was lost and won back.
		for ctx.Err() == nil && b.replica.Leader() {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// orphanLoop settles the jobs of replicas that lost their lease: a
// running job is taken over within the lease TTL and a poll.
func (b *Bot) orphanLoop(ctx context.Context) {
	if !b.replica.Replicated() {
		return // one process: Start settled what the last one left
	}
	every := min(b.replica.TTL()/4, 500*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := b.engine.Recover(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("settle the jobs of stopped replicas", "err", err)
		}
		// Chat input a stopped replica acknowledged but did not handle.
		for _, t := range b.trans {
			if r, ok := t.(interface{ Replay(context.Context) error }); ok {
				if err := r.Replay(ctx); err != nil && ctx.Err() == nil {
					b.log.Error("handle the input of stopped replicas", "platform", t.Platform(), "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// healthz says whether this process can do its work: on etcd, whether
// the cluster answers and this replica holds its lease (and leads).
func (b *Bot) healthz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"status": "ok", "state": b.store.Backend()}
	code := http.StatusOK
	if b.replica.Replicated() {
		body["replica"], body["leader"] = b.replica.ID, b.replica.Leader()
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		alarms, aerr := b.store.Alarms(ctx)
		if err := b.store.Ping(ctx); err != nil {
			code, body["status"], body["etcd"] = http.StatusServiceUnavailable, "unavailable", "unreachable: "+err.Error()
		} else if aerr == nil && slices.Contains(alarms, "NOSPACE") {
			code, body["status"], body["etcd"] = http.StatusServiceUnavailable, "unavailable",
				"the database quota is full (NOSPACE alarm): every write fails; compact and defragment etcd, then `etcdctl alarm disarm`"
		} else if down := b.replica.Down(); down != "" {
			code, body["status"], body["etcd"] = http.StatusServiceUnavailable, "unavailable", "no lease: "+down
		} else {
			body["etcd"] = "ok"
		}
	}
	writeJSONReply(w, code, body)
}

// retentionLoop deletes audit entries older than the retention, a small
// batch per transaction with a pause between, so it never holds the
// writer long enough to delay a transition.
func (b *Bot) retentionLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	// On etcd, the history before the revision of the previous round (an
	// hour ago) is compacted: it is what fills the quota.
	var lastRev int64
	for {
		if b.replica.Replicated() {
			if err := b.store.Compact(ctx, lastRev); err != nil && ctx.Err() == nil {
				b.log.Error("compact etcd's history", "err", err)
			} else if lastRev > 0 {
				b.log.Info("compacted etcd's history", "before_revision", lastRev)
			}
			if rev, err := b.store.Revision(ctx); err == nil {
				lastRev = rev
			}
		}
		if n, err := b.PruneAudit(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("audit retention", "err", err)
		} else if n > 0 {
			b.log.Info("audit retention: deleted old entries", "entries", n, "older_than", b.cfg.Audit.Retention.D().String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PruneAudit deletes the audit entries older than the retention now and
// returns how many.
func (b *Bot) PruneAudit(ctx context.Context) (int, error) {
	before := b.now().Add(-b.cfg.Audit.Retention.D())
	total := 0
	for ctx.Err() == nil {
		n, err := b.store.PruneAudit(ctx, before, state.PruneBatch)
		total += n
		if err != nil || n < state.PruneBatch {
			return total, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
	return total, ctx.Err()
}

// Stop stops serving and background work, lets running actions finish
// for the shutdown grace period, and closes the state. Jobs cut short stay
// marked running and are settled at the next start.
func (b *Bot) Stop() {
	b.stopOnce.Do(func() {
		if b.httpStop != nil {
			b.httpStop() // ends long polls, so Shutdown does not wait for them
		}
		if b.srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.srv.Shutdown(sctx)
			cancel()
		}
		b.stopListeners()
		if b.apiSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.apiSrv.Shutdown(sctx)
			cancel()
		}
		if b.opsSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = b.opsSrv.Shutdown(sctx)
			cancel()
		}
		if b.cancel != nil {
			b.cancel()
		}
		b.wg.Wait()
		if lc := b.Local(); lc != nil {
			lc.Close() // the page's history, written before the store closes
		}
		if b.redis != nil {
			b.redis.Close()
		}
		for _, st := range b.zk {
			st.Close()
		}
		if b.cleanup != nil {
			b.cleanup.Close()
		}
		b.closeState()
	})
}

// Run starts the bot and serves until ctx ends.
func (b *Bot) Run(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		b.Stop()
		return err
	}
	<-ctx.Done()
	b.log.Info("shutting down")
	b.Stop()
	return nil
}

func (b *Bot) timerLoop(ctx context.Context) {
	t := time.NewTicker(b.tick)
	defer t.Stop()
	for {
		if err := b.Tick(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("timers", "err", err)
		}
		if _, err := b.store.SweepIdempotency(ctx, b.now()); err != nil && ctx.Err() == nil {
			b.log.Error("sweep idempotency keys", "err", err)
		}
		if _, err := b.RefreshLookups(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("refresh looked-up fields", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
