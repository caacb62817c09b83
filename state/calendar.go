package state

// The calendar: freezes (freeze.go), release milestones, people away
// with their delegates, and duty rotations. It is read whole (it is small)
// and edited in one transaction with the notifications and audit entries
// an edit causes, so an announcement is queued exactly when its edit
// lands, once.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"opsbot/state/kv"
)

var bCalendar = []byte("calendar")

// Milestone is one dated step of a version's release plan ("4.26 封版").
type Milestone struct {
	Version string `json:"version"`
	// Date is the day, YYYY-MM-DD, in the calendar's time zone.
	Date string `json:"date"`
	Name string `json:"name"`
	// Kind is requirements_freeze, code_freeze, package, external_test or
	// "" (another milestone).
	Kind string `json:"kind,omitempty"`
	// Freeze is the id of the freeze this milestone set.
	Freeze string    `json:"freeze,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// Key identifies a milestone in its version's plan.
func (m Milestone) Key() string { return m.Version + "/" + m.Date + "/" + m.Name }

// Away hands User's approvals to Delegate until Until.
type Away struct {
	User     string    `json:"user"`
	Delegate string    `json:"delegate"`
	Until    time.Time `json:"until"`
	Since    time.Time `json:"since"`
	By       string    `json:"by"`
}

// Duty is a role's rotation: People take turns, Every ("daily" or
// "weekly") from Anchor; approval notices for the role go to the person
// on duty first.
type Duty struct {
	Role   string    `json:"role"`
	People []string  `json:"people"`
	Every  string    `json:"every"`
	Anchor time.Time `json:"anchor"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// OnDuty is who is on duty at now (and the turn's start and end).
func (d Duty) OnDuty(now time.Time) (who string, from, to time.Time) {
	if len(d.People) == 0 {
		return "", time.Time{}, time.Time{}
	}
	step := 24 * time.Hour
	if d.Every == "weekly" {
		step = 7 * 24 * time.Hour
	}
	n := int64(0)
	if now.After(d.Anchor) {
		n = int64(now.Sub(d.Anchor) / step)
	}
	from = d.Anchor.Add(time.Duration(n) * step)
	return d.People[n%int64(len(d.People))], from, from.Add(step)
}

// Calendar is the whole calendar.
type Calendar struct {
	Freezes    []Freeze
	Milestones []Milestone
	Away       []Away
	Duties     []Duty
}

// AwayOf returns user's absence in force at now.
func (c Calendar) AwayOf(user string, now time.Time) (Away, bool) {
	for _, a := range c.Away {
		if a.User == user && now.Before(a.Until) {
			return a, true
		}
	}
	return Away{}, false
}

// DutyOf returns role's rotation.
func (c Calendar) DutyOf(role string) (Duty, bool) {
	for _, d := range c.Duties {
		if d.Role == role {
			return d, true
		}
	}
	return Duty{}, false
}

// CalendarChange is what one calendar edit writes. Freezes without an id
// get the next "F-n".
type CalendarChange struct {
	PutFreezes       []Freeze
	DeleteFreezes    []string
	PutMilestones    []Milestone
	DeleteMilestones []string // keys
	PutAway          []Away
	DeleteAway       []string // users
	PutDuties        []Duty
	DeleteDuties     []string // roles
	Notify           []Notification
	Audit            []AuditEntry
}

func (c CalendarChange) empty() bool {
	return len(c.PutFreezes)+len(c.DeleteFreezes)+len(c.PutMilestones)+len(c.DeleteMilestones)+len(c.PutAway)+
		len(c.DeleteAway)+len(c.PutDuties)+len(c.DeleteDuties)+len(c.Notify)+len(c.Audit) == 0
}

func calKey(kind, id string) string { return key(bCalendar, []byte(kind+"/"+id)) }

// calVersionKey changes with every write to the calendar (freezes
// included), in the write's transaction.
var calVersionKey = metaKey("calendar.version")

func bumpCalendar(tx kv.Txn) error {
	n := uint64(0)
	if raw, ok, err := tx.Get(calVersionKey); err != nil {
		return err
	} else if ok {
		n, _ = strconv.ParseUint(string(raw), 10, 64)
	}
	return tx.Put(calVersionKey, []byte(strconv.FormatUint(n+1, 10)))
}

// ReadCalendar reads the whole calendar. Every person's action reads it
// (freezes decide), so it is kept and read again only when its version
// key says it changed: one key read instead of the whole calendar. The
// calendar returned is shared: read it, do not change it.
func (s *Store) ReadCalendar(ctx context.Context) (Calendar, error) {
	var c Calendar
	err := s.db.View(ctx, func(tx kv.Txn) error {
		raw, _, err := tx.Get(calVersionKey)
		if err != nil {
			return err
		}
		s.calMu.Lock()
		cached, at := s.cal, s.calAt
		s.calMu.Unlock()
		if cached != nil && at == string(raw) {
			c = *cached
			return nil
		}
		if c, err = readCalendar(tx); err != nil {
			return err
		}
		s.calMu.Lock()
		s.cal, s.calAt = &c, string(raw)
		s.calMu.Unlock()
		return nil
	})
	return c, err
}

func readCalendar(tx kv.Txn) (Calendar, error) {
	var c Calendar
	var err error
	if c.Freezes, err = readFreezes(tx); err != nil {
		return c, err
	}
	prefix := key(bCalendar, nil)
	err = each(tx, prefix, func(k string, v []byte) (bool, error) {
		kind, _, _ := strings.Cut(k[len(prefix):], "/")
		var err error
		switch kind {
		case "milestone":
			var m Milestone
			err = json.Unmarshal(v, &m)
			c.Milestones = append(c.Milestones, m)
		case "away":
			var a Away
			err = json.Unmarshal(v, &a)
			c.Away = append(c.Away, a)
		case "duty":
			var d Duty
			err = json.Unmarshal(v, &d)
			c.Duties = append(c.Duties, d)
		}
		if err != nil {
			return false, fmt.Errorf("calendar %s: %w", k, err)
		}
		return true, nil
	})
	sort.SliceStable(c.Milestones, func(i, j int) bool {
		a, b := c.Milestones[i], c.Milestones[j]
		if a.Date != b.Date {
			return a.Date < b.Date
		}
		return a.Version < b.Version
	})
	return c, err
}

// NewFreezeID hands out the next freeze id ("F-7") in a transaction of
// its own, so what names the freeze (its announcement) can be written
// with it; an id a crash leaves unused is skipped.
func (s *Store) NewFreezeID(ctx context.Context) (string, error) {
	var id string
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var err error
		id, err = nextFreezeID(tx)
		return err
	})
	return id, err
}

func nextFreezeID(tx kv.Txn) (string, error) {
	n, err := readCounter(tx, "freezes")
	if err != nil {
		return "", err
	}
	n++
	return "F-" + strconv.FormatUint(n, 10), tx.Put(seqKey("freezes"), []byte(strconv.FormatUint(n, 10)))
}

// WriteCalendar writes a change that does not depend on the calendar as
// it is.
func (s *Store) WriteCalendar(ctx context.Context, ch CalendarChange) error {
	_, err := s.EditCalendar(ctx, func(Calendar) (CalendarChange, error) { return ch, nil })
	return err
}

// EditCalendar reads the calendar and writes what fn decides, with its
// notifications and audit entries, in one transaction (fn may run again
// when a replica's edit conflicts). It returns the change as written
// (freezes with their ids). An empty change writes nothing and returns
// ErrNoChange.
func (s *Store) EditCalendar(ctx context.Context, fn func(c Calendar) (CalendarChange, error)) (CalendarChange, error) {
	var out CalendarChange
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		c, err := readCalendar(tx)
		if err != nil {
			return err
		}
		ch, err := fn(c)
		if err != nil {
			return err
		}
		if ch.empty() {
			return ErrNoChange
		}
		if err := bumpCalendar(tx); err != nil {
			return err
		}
		for i, f := range ch.PutFreezes {
			if f.ID == "" {
				if f.ID, err = nextFreezeID(tx); err != nil {
					return err
				}
				ch.PutFreezes[i] = f
			}
			if err := putJSON(tx, freezeKey(f.ID), f); err != nil {
				return err
			}
		}
		for _, id := range ch.DeleteFreezes {
			if err := tx.Delete(freezeKey(id)); err != nil {
				return err
			}
		}
		for _, m := range ch.PutMilestones {
			if err := putJSON(tx, calKey("milestone", m.Key()), m); err != nil {
				return err
			}
		}
		for _, k := range ch.DeleteMilestones {
			if err := tx.Delete(calKey("milestone", k)); err != nil {
				return err
			}
		}
		for _, a := range ch.PutAway {
			if err := putJSON(tx, calKey("away", a.User), a); err != nil {
				return err
			}
		}
		for _, u := range ch.DeleteAway {
			if err := tx.Delete(calKey("away", u)); err != nil {
				return err
			}
		}
		for _, d := range ch.PutDuties {
			if err := putJSON(tx, calKey("duty", d.Role), d); err != nil {
				return err
			}
		}
		for _, r := range ch.DeleteDuties {
			if err := tx.Delete(calKey("duty", r)); err != nil {
				return err
			}
		}
		for _, n := range ch.Notify {
			if _, err := s.enqueue(ctx, tx, n); err != nil {
				return err
			}
		}
		for _, a := range ch.Audit {
			if err := s.appendAudit(ctx, tx, a); err != nil {
				return err
			}
		}
		out = ch
		return nil
	})
	return out, err
}
