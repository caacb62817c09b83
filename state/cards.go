package state

import (
	"context"

	"opsbot/state/kv"
)

// CardRef says where a chat platform shows a ticket's card: a channel (or
// direct message) and the message's id there, and the stage instance the
// card was drawn in.
type CardRef struct {
	Platform string `json:"platform"`
	Channel  string `json:"channel"`
	TS       string `json:"ts"`
	Stage    string `json:"stage"`
	// Version is the ticket version the card was drawn from; updates from
	// that version or older are skipped.
	Version int64 `json:"version"`
	// Thread marks the channel card that progress replies go under.
	Thread bool `json:"thread,omitempty"`
	// Task names the card on platforms that address cards by a task id.
	Task string `json:"task,omitempty"`
}

func cardKey(ticket, platform string) string { return key(bCardRefs, []byte(ticket+"\x00"+platform)) }

// AddCardRef records a posted card.
func (s *Store) AddCardRef(ctx context.Context, ticket string, ref CardRef) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var refs []CardRef
		if _, err := getJSON(tx, cardKey(ticket, ref.Platform), &refs); err != nil {
			return err
		}
		for _, r := range refs {
			if r.Channel == ref.Channel && r.TS == ref.TS {
				return nil
			}
		}
		return putJSON(tx, cardKey(ticket, ref.Platform), append(refs, ref))
	})
}

// CardRefs returns the cards a platform posted for a ticket, oldest first.
func (s *Store) CardRefs(ctx context.Context, ticket, platform string) ([]CardRef, error) {
	var refs []CardRef
	err := s.db.View(ctx, func(tx kv.Txn) error {
		_, err := getJSON(tx, cardKey(ticket, platform), &refs)
		return err
	})
	return refs, err
}

// SetCardRefs replaces a platform's card references of a ticket.
func (s *Store) SetCardRefs(ctx context.Context, ticket, platform string, refs []CardRef) error {
	return s.db.Update(ctx, func(tx kv.Txn) error { return putJSON(tx, cardKey(ticket, platform), refs) })
}

// SpendCardCode forgets the update code (TS) of the card with task id
// task: it was used, and a code works once.
func (s *Store) SpendCardCode(ctx context.Context, ticket, platform, task string) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var refs []CardRef
		if _, err := getJSON(tx, cardKey(ticket, platform), &refs); err != nil {
			return err
		}
		for i := range refs {
			if refs[i].Task == task {
				refs[i].TS = ""
			}
		}
		return putJSON(tx, cardKey(ticket, platform), refs)
	})
}
