package zookeeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Store is one ensemble's version records. The connection reconnects (and
// replaces an expired session) by itself.
type Store struct {
	Name string
	conn *zk.Conn
	root string
}

// Config connects to one ensemble.
type Config struct {
	Name    string
	Servers []string
	Root    string
	Log     *slog.Logger
}

type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, a ...any) {
	l.log.Debug("zookeeper: " + fmt.Sprintf(format, a...))
}

// Open connects without waiting: an ensemble that is down does not stop
// the bot; calls fail until it is back.
func Open(cfg Config) (*Store, error) {
	if cfg.Root == "" {
		cfg.Root = "/opsbot/games"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	conn, events, err := zk.Connect(cfg.Servers, 4*time.Second, zk.WithLogger(zkLogger{cfg.Log}), zk.WithLogInfo(false))
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %w", cfg.Name, err)
	}
	// Give the first session a moment, so the first call does not fail
	// for a connection still being made; a down ensemble is not waited for.
	timeout := time.After(2 * time.Second)
wait:
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				break wait
			}
		case <-timeout:
			cfg.Log.Warn("zookeeper not reachable yet; calls will fail until it is", "ensemble", cfg.Name)
			break wait
		}
	}
	go func() {
		for range events { // drain: the connection keeps reporting states
		}
	}()
	return &Store{Name: cfg.Name, conn: conn, root: cfg.Root}, nil
}

// Close ends the session.
func (s *Store) Close() { s.conn.Close() }

// Up reports whether the ensemble connection holds a session now.
func (s *Store) Up() bool { return s.conn.State() == zk.StateHasSession }

// platformName is what a platform may be called: one znode name, so that
// no name (".." or one with a "/") reaches outside the platform's node.
var platformName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// CheckPlatform refuses a name that is not a platform's: one znode name.
func CheckPlatform(platform string) error {
	if !platformName.MatchString(platform) || strings.Contains(platform, "..") {
		return fmt.Errorf("平台名无效 · %q is not a platform name: letters, digits, '-', '_' or '.', e.g. android", platform)
	}
	return nil
}

// dir is the platform's node, or an error for a name that is not one.
func (s *Store) dir(platform string) (string, error) {
	if err := CheckPlatform(platform); err != nil {
		return "", err
	}
	return path.Join(s.root, platform), nil
}

// ensure creates path and its parents.
func (s *Store) ensure(p string) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	cur := ""
	for _, part := range parts {
		cur += "/" + part
		if _, err := s.conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s on %s: %w", cur, s.Name, err)
		}
	}
	return nil
}

// SetStatus marks a platform active or stopped.
func (s *Store) SetStatus(platform, status string) error {
	dir, err := s.dir(platform)
	if err != nil {
		return err
	}
	if err := s.ensure(dir); err != nil {
		return err
	}
	data, _ := json.Marshal(map[string]string{"status": status})
	_, err = s.conn.Set(dir, data, -1)
	return err
}

// Status returns a platform's status ("active" when unset).
func (s *Store) Status(platform string) (string, error) {
	dir, err := s.dir(platform)
	if err != nil {
		return "", err
	}
	data, _, err := s.conn.Get(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return "active", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s status on %s: %w", platform, s.Name, err)
	}
	var st struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(data, &st) != nil || st.Status == "" {
		return "active", nil
	}
	return st.Status, nil
}

// Records returns a platform's history in version order.
func (s *Store) Records(platform string) ([]Record, error) {
	pdir, err := s.dir(platform)
	if err != nil {
		return nil, err
	}
	dir := path.Join(pdir, "versions")
	kids, _, err := s.conn.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s versions on %s: %w", platform, s.Name, err)
	}
	var out []Record
	for _, k := range kids {
		data, _, err := s.conn.Get(path.Join(dir, k))
		if err != nil {
			return nil, fmt.Errorf("read %s/%s on %s: %w", platform, k, s.Name, err)
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("decode %s/%s on %s: %w", platform, k, s.Name, err)
		}
		out = append(out, r)
	}
	SortRecords(out)
	return out, nil
}

// Pointers returns a platform's pointers and their node version (-1 when
// the node does not exist yet).
func (s *Store) Pointers(platform string) (Pointers, int32, error) {
	dir, err := s.dir(platform)
	if err != nil {
		return Pointers{}, 0, err
	}
	data, stat, err := s.conn.Get(path.Join(dir, "pointers"))
	if errors.Is(err, zk.ErrNoNode) {
		return Pointers{}, -1, nil
	}
	if err != nil {
		return Pointers{}, 0, fmt.Errorf("read %s pointers on %s: %w", platform, s.Name, err)
	}
	var p Pointers
	if err := json.Unmarshal(data, &p); err != nil {
		return Pointers{}, 0, fmt.Errorf("decode %s pointers on %s: %w", platform, s.Name, err)
	}
	return p, stat.Version, nil
}

func versionNode(v int) string { return "v" + fmt.Sprintf("%012d", v) }

// Change applies change to the platform's pointers and, when rec is not
// nil, adds rec to the history, in one ZooKeeper transaction guarded by
// the pointers' version; it retries when another publisher got there
// first, so nothing either of them wrote is lost. A record that already
// exists (a retried step) is kept as it is. It returns the pointers
// before and after.
func (s *Store) Change(ctx context.Context, platform string, rec *Record, change func(Pointers, []Record) (Pointers, error)) (Pointers, Pointers, error) {
	dir, err := s.dir(platform)
	if err != nil {
		return Pointers{}, Pointers{}, err
	}
	if err := s.ensure(path.Join(dir, "versions")); err != nil {
		return Pointers{}, Pointers{}, err
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return Pointers{}, Pointers{}, err
		}
		prev, ver, err := s.Pointers(platform)
		if err != nil {
			return prev, prev, err
		}
		recs, err := s.Records(platform)
		if err != nil {
			return prev, prev, err
		}
		next, err := change(prev, recs)
		if err != nil {
			return prev, prev, err
		}
		data, _ := json.Marshal(next)
		var ops []any
		if rec != nil {
			node := path.Join(dir, "versions", versionNode(rec.Version))
			if ok, _, err := s.conn.Exists(node); err != nil {
				return prev, prev, err
			} else if !ok {
				body, _ := json.Marshal(rec)
				ops = append(ops, &zk.CreateRequest{Path: node, Data: body, Acl: zk.WorldACL(zk.PermAll)})
			}
		}
		pnode := path.Join(dir, "pointers")
		if ver < 0 {
			ops = append(ops, &zk.CreateRequest{Path: pnode, Data: data, Acl: zk.WorldACL(zk.PermAll)})
		} else {
			ops = append(ops, &zk.SetDataRequest{Path: pnode, Data: data, Version: ver})
		}
		_, err = s.conn.Multi(ops...)
		if err == nil {
			return prev, next, nil
		}
		if (errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNodeExists)) && attempt < 50 {
			continue // another publisher changed it: read again
		}
		return prev, prev, fmt.Errorf("write %s on %s: %w", platform, s.Name, err)
	}
}

// ParseVersion reads a version number, "" being 0.
func ParseVersion(s string) (int, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	return strconv.Atoi(strings.TrimSpace(s))
}
