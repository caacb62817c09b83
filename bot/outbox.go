package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"opsbot/present"
	"slices"
	"strings"
	"time"

	"opsbot/state"
	"opsbot/templates"
)

// deliverLoop sends queued notifications whenever some are queued or a
// retry comes due, until ctx ends.
func (b *Bot) deliverLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// With replicas, notifications another replica queued wake this one.
	queued := b.store.Watch(ctx, "outbox")
	for {
		if _, err := b.DeliverDue(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("outbox", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-b.engine.OutboxSignal():
			// Gather a few milliseconds of notifications into one commit.
			time.Sleep(10 * time.Millisecond)
		case <-queued:
			time.Sleep(10 * time.Millisecond)
		case <-t.C:
		}
	}
}

// DeliverDue sends the outbox entries that are due and returns how many
// were delivered. A failed entry stays in the outbox with the platforms it
// already reached, and is retried with exponential backoff; nothing is
// dropped.
func (b *Bot) DeliverDue(ctx context.Context) (int, error) {
	b.deliverMu.Lock()
	defer b.deliverMu.Unlock()
	delivered := 0
	for {
		if ctx.Err() != nil {
			// Stopping: what is left is delivered after the next start.
			return delivered, nil
		}
		pending, err := b.store.Pending(ctx, b.now(), 200)
		if err != nil || len(pending) == 0 {
			return delivered, err
		}
		var done []uint64
		progress := false
		// A card update draws the ticket as it is now, so of several for
		// one ticket in this pass only the last needs sending.
		lastUpdate := map[string]uint64{}
		for _, n := range pending {
			if n.Kind == state.NotifyCardUpdate {
				lastUpdate[n.Ticket] = n.ID
			}
		}
		for _, n := range pending {
			if n.Kind == state.NotifyCardUpdate && lastUpdate[n.Ticket] != n.ID {
				done = append(done, n.ID)
				continue
			}
			err := b.deliver(ctx, n)
			if err == nil {
				done = append(done, n.ID)
				continue
			}
			if ctx.Err() != nil {
				// Cut short by a shutdown, not a failed attempt: the
				// platforms it reached are remembered, so the next start
				// sends it only to the others.
				var pe *platformError
				if errors.As(err, &pe) && len(pe.reached) > 0 {
					sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
					if derr := b.store.Reached(sctx, n.ID, pe.reached); derr != nil {
						b.log.Warn("could not record a delivery cut short by the shutdown", "id", n.ID, "err", derr)
					}
					cancel()
				}
				break
			}
			delay := b.cfg.Outbox.RetryMin.D() << min(n.Attempts, 16)
			delay = min(delay, b.cfg.Outbox.RetryMax.D())
			b.log.Warn("notification not delivered, will retry", "id", n.ID, "user", n.User, "ticket", n.Ticket,
				"attempt", n.Attempts+1, "in", delay, "err", err)
			var reached []string
			var pe *platformError
			if errors.As(err, &pe) {
				reached = pe.reached
				for _, p := range pe.failed {
					if b.metrics != nil {
						b.metrics.deliveryErrors.WithLabelValues(p).Inc()
					}
				}
			}
			if derr := b.store.Deferred(ctx, n.ID, b.now().Add(delay), b.redact.Redact(err.Error()), reached); derr != nil {
				return delivered, derr
			}
			progress = true
		}
		if len(done) > 0 {
			// What was sent is recorded even when a shutdown cut the pass
			// short: else the next start would send it again.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := b.store.Delivered(sctx, done...)
			cancel()
			if err != nil {
				return delivered, err
			}
			delivered += len(done)
			progress = true
		}
		if !progress || len(pending) < 200 {
			return delivered, nil
		}
	}
}

// platformError names the platforms a delivery failed on, and those it
// reached.
type platformError struct {
	failed  []string
	errs    []error
	reached []string
}

func (e *platformError) Error() string {
	var parts []string
	for i, p := range e.failed {
		parts = append(parts, fmt.Sprintf("%s: %v", p, e.errs[i]))
	}
	return strings.Join(parts, "; ")
}

func (b *Bot) deliver(ctx context.Context, n state.Notification) error {
	msg, err := b.notice(ctx, n)
	if err != nil && n.Kind == state.NotifyCardUpdate && !errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("read %s to draw its card: %w", n.Ticket, err) // retried
	}
	if err != nil {
		b.log.Error("undecodable notification dropped", "id", n.ID, "kind", n.Kind, "err", err)
		return nil
	}
	pe := &platformError{}
	if n.Kind == state.NotifyProgress {
		for _, t := range b.trans {
			if pp, ok := t.(ProgressPoster); ok && !slices.Contains(n.Done(), t.Platform()) {
				if err := pp.PostProgress(ctx, n.Ticket, msg); err != nil {
					pe.failed, pe.errs = append(pe.failed, t.Platform()), append(pe.errs, err)
				}
			}
		}
	} else if n.Kind == state.NotifyChannel || n.Kind == state.NotifyClusterWarning {
		for _, t := range b.trans {
			if cp, ok := t.(ChannelPoster); ok && !slices.Contains(n.Done(), t.Platform()) {
				if err := cp.PostChannel(ctx, n.User, msg); err != nil {
					pe.failed, pe.errs = append(pe.failed, t.Platform()), append(pe.errs, err)
				}
			}
		}
	} else if n.Kind == state.NotifyCardUpdate {
		for _, t := range b.trans {
			if cu, ok := t.(CardUpdater); ok && !slices.Contains(n.Done(), t.Platform()) {
				if err := cu.UpdateCards(ctx, n.Ticket, msg); err != nil {
					pe.failed, pe.errs = append(pe.failed, t.Platform()), append(pe.errs, err)
				}
			}
		}
	} else {
		u, ok := b.dir.User(n.User)
		if !ok {
			b.log.Warn("notification for unknown user dropped", "user", n.User, "ticket", n.Ticket)
			return nil
		}
		for _, t := range b.trans {
			id := u.IDs[t.Platform()]
			if t.Platform() == "local" {
				id = u.Name
			}
			if id == "" || slices.Contains(n.Done(), t.Platform()) {
				continue
			}
			if err := t.Send(ctx, id, msg); err != nil {
				pe.failed, pe.errs = append(pe.failed, t.Platform()), append(pe.errs, err)
			}
		}
	}
	if len(pe.failed) == 0 {
		return nil
	}
	for _, t := range b.trans {
		if !slices.Contains(pe.failed, t.Platform()) {
			pe.reached = append(pe.reached, t.Platform())
		}
	}
	return pe
}

// notice is the message a notification carries: rendered when it was
// queued, or, for a notification that carries intent, drawn now: a card
// update draws the ticket as it is (a late or retried update never draws
// an older state over a newer one), a cluster warning (queued inside the
// inventory's transaction) is worded.
func (b *Bot) notice(ctx context.Context, n state.Notification) (templates.Message, error) {
	if n.Kind == state.NotifyCardUpdate {
		t, err := b.store.Get(ctx, n.Ticket)
		if err != nil {
			return templates.Message{}, err
		}
		return b.present.TicketCard(t), nil
	}
	if n.Kind == state.NotifyClusterWarning {
		var w state.ClusterWarning
		if err := json.Unmarshal(n.Message, &w); err != nil {
			return templates.Message{}, err
		}
		return present.ClusterWarning(w), nil
	}
	var msg templates.Message
	err := json.Unmarshal(n.Message, &msg)
	return msg, err
}
