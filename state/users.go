package state

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"opsbot/state/kv"
)

func platformKey(platform, id string) string { return key(bUserIDs, []byte(platform+":"+id)) }

func userKey(name string) string { return key(bUsers, []byte(name)) }

// PutUser creates or updates a user's display name and platform ids. Roles
// are left as they are: they change only through Grant and Revoke.
// It fails when a platform id already belongs to another user.
func (s *Store) PutUser(ctx context.Context, u User) (User, error) {
	u.Name = NormName(u.Name)
	if err := CheckName("user name", u.Name); err != nil {
		return u, err
	}
	for p, id := range u.IDs {
		if id == "" {
			continue
		}
		if err := CheckName(p+" id", id); err != nil {
			return u, err
		}
	}
	var out User
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var cur User
		if _, err := getJSON(tx, userKey(u.Name), &cur); err != nil {
			return err
		}
		cur.Name = u.Name
		if u.Display != "" {
			cur.Display = u.Display
		}
		if u.Email != "" {
			cur.Email = strings.ToLower(u.Email)
		}
		if cur.IDs == nil {
			cur.IDs = map[string]string{}
		}
		for p, id := range u.IDs {
			if id == "" {
				continue
			}
			owner, ok, err := tx.Get(platformKey(p, id))
			if err != nil {
				return err
			}
			if ok && string(owner) != u.Name {
				return fmt.Errorf("%s id %s already belongs to user %s", p, id, owner)
			}
			if old, ok := cur.IDs[p]; ok && old != id {
				if err := tx.Delete(platformKey(p, old)); err != nil {
					return err
				}
			}
			cur.IDs[p] = id
			if err := tx.Put(platformKey(p, id), []byte(u.Name)); err != nil {
				return err
			}
		}
		out = cur
		return putJSON(tx, userKey(u.Name), cur)
	})
	return out, err
}

// User returns a user by name, case-insensitively.
func (s *Store) User(ctx context.Context, name string) (User, error) {
	var u User
	err := s.db.View(ctx, func(tx kv.Txn) error {
		ok, err := getJSON(tx, userKey(NormName(name)), &u)
		if err == nil && !ok {
			err = fmt.Errorf("user %s: %w", NormName(name), ErrNotFound)
		}
		return err
	})
	return u, err
}

// UserByPlatform returns the user known on a platform under id.
func (s *Store) UserByPlatform(ctx context.Context, platform, id string) (User, error) {
	var u User
	err := s.db.View(ctx, func(tx kv.Txn) error {
		name, ok, err := tx.Get(platformKey(platform, id))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s user %s: %w", platform, id, ErrNotFound)
		}
		_, err = getJSON(tx, userKey(string(name)), &u)
		return err
	})
	return u, err
}

// Users returns every user, by name.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, key(bUsers, nil), func(_ string, v []byte) (bool, error) {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return false, err
			}
			out = append(out, u)
			return true, nil
		})
	})
	return out, err
}

// Grant gives a role to a user; it reports false when the user already had it.
// The user must exist.
func (s *Store) Grant(ctx context.Context, role, user string, audit ...AuditEntry) (bool, error) {
	return s.setRole(ctx, role, user, true, audit)
}

// Revoke takes a role from a user; it reports false when the user did not have it.
func (s *Store) Revoke(ctx context.Context, role, user string, audit ...AuditEntry) (bool, error) {
	return s.setRole(ctx, role, user, false, audit)
}

func (s *Store) setRole(ctx context.Context, role, user string, grant bool, audit []AuditEntry) (bool, error) {
	role, user = NormName(role), NormName(user)
	if err := CheckName("role", role); err != nil {
		return false, err
	}
	var changed bool
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		changed = false
		var u User
		ok, err := getJSON(tx, userKey(user), &u)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("user %s: %w", user, ErrNotFound)
		}
		has := slices.Contains(u.Roles, role)
		if has == grant {
			return nil
		}
		changed = true
		mk := key(bRoleMembers, []byte(role+"\x00"+user))
		if grant {
			u.Roles = append(u.Roles, role)
			sort.Strings(u.Roles)
			err = tx.Put(mk, nil)
		} else {
			u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == role })
			err = tx.Delete(mk)
		}
		if err != nil {
			return err
		}
		for _, a := range audit {
			if err := s.appendAudit(ctx, tx, a); err != nil {
				return err
			}
		}
		return putJSON(tx, userKey(user), u)
	})
	return changed, err
}

// RoleMembers returns the users holding a role, by name.
func (s *Store) RoleMembers(ctx context.Context, role string) ([]string, error) {
	prefix := key(bRoleMembers, []byte(NormName(role)+"\x00"))
	var out []string
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, prefix, func(k string, _ []byte) (bool, error) {
			out = append(out, k[len(prefix):])
			return true, nil
		})
	})
	return out, err
}
