package bot

import (
	"context"
	"sync"
	"time"

	"opsbot/state"
)

// auditWriter group-commits the audit entries of commands that changed
// nothing (reads, refusals): they are queued and written together at most
// auditDelay later, so a "show" does not wait for an fsync of its own.
// Commands that change a ticket write their entry in the ticket's own
// transaction instead. Stop and Flush write whatever is queued.
type auditWriter struct {
	store *state.Store
	onErr func(error)
	mu    sync.Mutex
	queue []state.AuditEntry
	kick  chan struct{}
	done  chan struct{}
	// writing is held while a batch is taken and written, so a Flush
	// returns only once what was queued before it is stored, also when
	// the background writer took it first.
	writing sync.Mutex
}

const (
	auditDelay = 10 * time.Millisecond
	auditMax   = 4096 // queued entries beyond this are written by the caller
)

func newAuditWriter(store *state.Store, onErr func(error)) *auditWriter {
	return &auditWriter{store: store, onErr: onErr, kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// Add queues an entry; when the queue is full it writes synchronously.
func (w *auditWriter) Add(ctx context.Context, a state.AuditEntry) {
	w.mu.Lock()
	if len(w.queue) >= auditMax {
		w.mu.Unlock()
		if err := w.store.Audit(ctx, a); err != nil {
			w.onErr(err)
		}
		return
	}
	w.queue = append(w.queue, a)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Flush writes the queued entries now.
func (w *auditWriter) Flush(ctx context.Context) {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	batch := w.queue
	w.queue = nil
	w.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := w.store.Audit(ctx, batch...); err != nil {
		w.onErr(err)
	}
}

// run flushes auditDelay after the first queued entry, until ctx ends.
func (w *auditWriter) run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			w.Flush(context.WithoutCancel(ctx))
			return
		case <-w.kick:
			time.Sleep(auditDelay)
			w.Flush(ctx)
		}
	}
}
