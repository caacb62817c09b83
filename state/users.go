package state

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"
)

func platformKey(platform, id string) []byte { return []byte(platform + ":" + id) }

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
	err := s.db.Batch(func(tx *bolt.Tx) error {
		users, ids := tx.Bucket(bUsers), tx.Bucket(bUserIDs)
		var cur User
		if _, err := getJSON(users, []byte(u.Name), &cur); err != nil {
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
			if owner := ids.Get(platformKey(p, id)); owner != nil && string(owner) != u.Name {
				return fmt.Errorf("%s id %s already belongs to user %s", p, id, owner)
			}
			if old, ok := cur.IDs[p]; ok && old != id {
				if err := ids.Delete(platformKey(p, old)); err != nil {
					return err
				}
			}
			cur.IDs[p] = id
			if err := ids.Put(platformKey(p, id), []byte(u.Name)); err != nil {
				return err
			}
		}
		out = cur
		return putJSON(users, []byte(u.Name), cur)
	})
	return out, err
}

// User returns a user by name, case-insensitively.
func (s *Store) User(ctx context.Context, name string) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bUsers), []byte(NormName(name)), &u)
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
	err := s.db.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(bUserIDs).Get(platformKey(platform, id))
		if name == nil {
			return fmt.Errorf("%s user %s: %w", platform, id, ErrNotFound)
		}
		_, err := getJSON(tx.Bucket(bUsers), name, &u)
		return err
	})
	return u, err
}

// Users returns every user, by name.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if _, err := getJSON(tx.Bucket(bUsers), k, &u); err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
	})
	return out, err
}

// Grant gives a role to a user; it reports false when the user already had it.
// The user must exist.
func (s *Store) Grant(ctx context.Context, role, user string, audit ...AuditEntry) (bool, error) {
	return s.setRole(role, user, true, audit)
}

// Revoke takes a role from a user; it reports false when the user did not have it.
func (s *Store) Revoke(ctx context.Context, role, user string, audit ...AuditEntry) (bool, error) {
	return s.setRole(role, user, false, audit)
}

func (s *Store) setRole(role, user string, grant bool, audit []AuditEntry) (bool, error) {
	role, user = NormName(role), NormName(user)
	if err := CheckName("role", role); err != nil {
		return false, err
	}
	var changed bool
	err := s.db.Batch(func(tx *bolt.Tx) error {
		changed = false
		users := tx.Bucket(bUsers)
		var u User
		ok, err := getJSON(users, []byte(user), &u)
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
		members := tx.Bucket(bRoleMembers)
		key := []byte(role + "\x00" + user)
		if grant {
			u.Roles = append(u.Roles, role)
			sort.Strings(u.Roles)
			err = members.Put(key, nil)
		} else {
			u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == role })
			err = members.Delete(key)
		}
		if err != nil {
			return err
		}
		for _, a := range audit {
			if err := appendAudit(tx, a); err != nil {
				return err
			}
		}
		return putJSON(users, []byte(user), u)
	})
	return changed, err
}

// RoleMembers returns the users holding a role, by name.
func (s *Store) RoleMembers(ctx context.Context, role string) ([]string, error) {
	prefix := []byte(NormName(role) + "\x00")
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bRoleMembers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	return out, err
}
