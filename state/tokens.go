package state

// API tokens (stored as SHA-256 hashes, never in clear) and the API's
// idempotency keys (each names the ticket its first request created).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"opsbot/state/kv"
)

var (
	bTokens    = []byte("api_tokens")     // name -> APIToken
	bTokenHash = []byte("api_token_hash") // sha256 hex -> name
	bAPIIdem   = []byte("api_idem")       // idempotency key -> APIIdem
)

// APIToken is a token other systems call the API with. Only the hash of
// the secret is kept: a token lost is replaced, never read back.
type APIToken struct {
	Name string `json:"name"`
	// User is the service user the token acts as; its roles decide.
	User    string    `json:"user"`
	Scopes  []string  `json:"scopes"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	// CreatedBy is who made it (an operator on the command line: "admin").
	CreatedBy string    `json:"created_by"`
	Expires   time.Time `json:"expires,omitzero"`
	Revoked   time.Time `json:"revoked,omitzero"`
}

// HasScope reports whether the token carries scope.
func (t APIToken) HasScope(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Usable says why the token cannot be used at now, or "".
func (t APIToken) Usable(now time.Time) string {
	switch {
	case !t.Revoked.IsZero():
		return "revoked"
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return "expired"
	}
	return ""
}

// HashToken is how a token's secret is stored and looked up.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ErrTokenExists refuses a second token of one name (revoke it first).
var ErrTokenExists = errors.New("a token of that name exists")

// CreateToken stores a new token; its name is unique among tokens not
// revoked.
func (s *Store) CreateToken(ctx context.Context, t APIToken, audit ...AuditEntry) error {
	t.Name = strings.ToLower(t.Name)
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx kv.Txn) error {
		old, ok, err := tx.Get(key(bTokens, []byte(t.Name)))
		if err != nil {
			return err
		}
		if ok {
			var prev APIToken
			if err := json.Unmarshal(old, &prev); err != nil {
				return err
			}
			if prev.Revoked.IsZero() {
				return ErrTokenExists
			}
			if err := tx.Delete(key(bTokenHash, []byte(prev.Hash))); err != nil {
				return err
			}
		}
		if err := tx.Put(key(bTokens, []byte(t.Name)), raw); err != nil {
			return err
		}
		if err := tx.Put(key(bTokenHash, []byte(t.Hash)), []byte(t.Name)); err != nil {
			return err
		}
		for _, a := range audit {
			if err := s.appendAudit(ctx, tx, a); err != nil {
				return err
			}
		}
		return nil
	})
}

// TokenByHash finds the token whose secret hashes to hash.
func (s *Store) TokenByHash(ctx context.Context, hash string) (APIToken, bool, error) {
	var t APIToken
	var found bool
	err := s.db.View(ctx, func(tx kv.Txn) error {
		found = false
		name, ok, err := tx.Get(key(bTokenHash, []byte(hash)))
		if err != nil || !ok {
			return err
		}
		raw, ok, err := tx.Get(key(bTokens, name))
		if err != nil || !ok {
			return err
		}
		found = true
		return json.Unmarshal(raw, &t)
	})
	return t, found, err
}

// Tokens lists every token by name (hashes included; callers show none).
func (s *Store) Tokens(ctx context.Context) ([]APIToken, error) {
	var out []APIToken
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = nil
		prefix := key(bTokens, nil)
		after := ""
		for {
			xs, err := tx.Range(prefix, after, 256)
			if err != nil {
				return err
			}
			for _, x := range xs {
				var t APIToken
				if err := json.Unmarshal(x.Value, &t); err != nil {
					return err
				}
				out = append(out, t)
				after = x.Key
			}
			if len(xs) < 256 {
				return nil
			}
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// RevokeToken marks a token revoked at now; false when there is no such
// token or it was revoked already.
func (s *Store) RevokeToken(ctx context.Context, name string, now time.Time, audit ...AuditEntry) (bool, error) {
	name = strings.ToLower(name)
	var done bool
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		done = false
		raw, ok, err := tx.Get(key(bTokens, []byte(name)))
		if err != nil || !ok {
			return err
		}
		var t APIToken
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		if !t.Revoked.IsZero() {
			return nil
		}
		t.Revoked = now
		if raw, err = json.Marshal(t); err != nil {
			return err
		}
		if err := tx.Put(key(bTokens, []byte(name)), raw); err != nil {
			return err
		}
		for _, a := range audit {
			if err := s.appendAudit(ctx, tx, a); err != nil {
				return err
			}
		}
		done = true
		return nil
	})
	return done, err
}

// APIIdem is what an API idempotency key recorded: the ticket its first
// request created and a digest of that request, so a key reused for a
// different request is refused rather than answered with the wrong
// ticket.
type APIIdem struct {
	Ticket string `json:"ticket"`
	Digest string `json:"digest"`
}

// WithRequestTicket makes the ticket write under ctx (which must also
// carry WithDelivery for key) record which ticket the key created.
func WithRequestTicket(ctx context.Context, key, digest string) context.Context {
	return context.WithValue(ctx, apiIdemKey{}, &apiIdem{key: key, digest: digest})
}

type apiIdemKey struct{}

type apiIdem struct{ key, digest string }

// RequestTicket looks up what an API idempotency key created.
func (s *Store) RequestTicket(ctx context.Context, k string) (APIIdem, bool, error) {
	var v APIIdem
	var ok bool
	err := s.db.View(ctx, func(tx kv.Txn) error {
		raw, found, err := tx.Get(key(bAPIIdem, []byte(k)))
		if err != nil || !found {
			ok = false
			return err
		}
		ok = true
		return json.Unmarshal(raw, &v)
	})
	return v, ok, err
}

// recordRequestTicket writes the key's ticket in the creating transaction.
func recordRequestTicket(ctx context.Context, tx kv.Txn, ticket string) error {
	a, _ := ctx.Value(apiIdemKey{}).(*apiIdem)
	if a == nil {
		return nil
	}
	raw, err := json.Marshal(APIIdem{Ticket: ticket, Digest: a.digest})
	if err != nil {
		return err
	}
	return tx.Put(key(bAPIIdem, []byte(a.key)), raw)
}
