package cleanup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

func patterns(t Target) []string {
	if len(t.Patterns) == 0 {
		return []string{"*"}
	}
	return t.Patterns
}

// scan walks the keys matching pattern in batches, never with KEYS.
func (x *Executor) scan(ctx context.Context, c *goredis.Client, pattern string, fn func(keys []string) error) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, int64(x.cfg.Batch)).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// redisBackend is the Executor's Redis side for one environment.
type redisBackend struct {
	x   *Executor
	env Env
}

// count counts each pattern's keys; a key matched by two patterns
// (or returned twice by SCAN while Redis resizes) counts once.
func (b redisBackend) count(ctx context.Context, t Target) ([]Count, error) {
	c := b.x.redisClient(b.env, t.DB)
	seen := map[string]struct{}{}
	var out []Count
	for _, p := range patterns(t) {
		cnt := Count{What: fmt.Sprintf("db%d %s", t.DB, p)}
		err := b.x.scan(ctx, c, p, func(keys []string) error {
			for _, k := range keys {
				if _, dup := seen[k]; !dup {
					seen[k] = struct{}{}
					cnt.N++
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		out = append(out, cnt)
	}
	return out, nil
}

// wipe deletes each pattern's keys with UNLINK (freed in the
// background) in SCAN-sized batches, so the server keeps answering other
// clients; it never calls KEYS or FLUSHDB/FLUSHALL.
func (b redisBackend) wipe(ctx context.Context, t Target) ([]Count, error) {
	c := b.x.redisClient(b.env, t.DB)
	var out []Count
	for _, p := range patterns(t) {
		cnt := Count{What: fmt.Sprintf("db%d %s", t.DB, p)}
		err := b.x.scan(ctx, c, p, func(keys []string) error {
			n, err := c.Unlink(ctx, keys...).Result()
			cnt.N += n
			return err
		})
		out = append(out, cnt)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// dumped is one key in a Redis backup: its DUMP payload and the time to
// live it had (0: none).
type dumped struct {
	Key   []byte `json:"k"`
	TTLms int64  `json:"ttl"`
	Value []byte `json:"v"`
}

// backup writes every matching key's DUMP payload and TTL, one JSON line
// each: <dir>/keys.jsonl.
func (b redisBackend) backup(ctx context.Context, t Target, dir string) (int64, error) {
	c := b.x.redisClient(b.env, t.DB)
	seen := map[string]struct{}{}
	var n int64
	err := writeBackup(filepath.Join(dir, "keys.jsonl"), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, p := range patterns(t) {
			err := b.x.scan(ctx, c, p, func(keys []string) error {
				pipe := c.Pipeline()
				dumps := make([]*goredis.StringCmd, len(keys))
				ttls := make([]*goredis.DurationCmd, len(keys))
				for i, k := range keys {
					dumps[i], ttls[i] = pipe.Dump(ctx, k), pipe.PTTL(ctx, k)
				}
				if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
					return err
				}
				for i, k := range keys {
					if _, dup := seen[k]; dup {
						continue
					}
					v, err := dumps[i].Result()
					if errors.Is(err, goredis.Nil) {
						continue // expired or deleted since the SCAN
					}
					if err != nil {
						return err
					}
					seen[k] = struct{}{}
					if err := enc.Encode(dumped{Key: []byte(k), TTLms: max(ttls[i].Val(), 0).Milliseconds(), Value: []byte(v)}); err != nil {
						return err
					}
					n++
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// restore puts the keys back with RESTORE ... REPLACE and the time
// to live they had when they were dumped.
func (b redisBackend) restore(ctx context.Context, t Target, dir string) (int64, error) {
	c := b.x.redisClient(b.env, t.DB)
	f, err := os.Open(filepath.Join(dir, "keys.jsonl"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	var n int64
	pipe := c.Pipeline()
	queued := 0
	flush := func() error {
		if queued == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		queued = 0
		return err
	}
	for dec.More() {
		var d dumped
		if err := dec.Decode(&d); err != nil {
			return n, err
		}
		pipe.RestoreReplace(ctx, string(d.Key), time.Duration(d.TTLms)*time.Millisecond, string(d.Value))
		queued++
		n++
		if queued == b.x.cfg.Batch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	return n, flush()
}
