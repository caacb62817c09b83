package cleanup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// collections lists a Mongo target's collections: the configured ones,
// or every non-system collection of the database.
func (x *Executor) collections(ctx context.Context, env Env, t Target) (*mongo.Database, []string, error) {
	c, err := x.mongoClient(env)
	if err != nil {
		return nil, nil, err
	}
	db := c.Database(t.Database)
	if len(t.Collections) > 0 {
		return db, t.Collections, nil
	}
	names, err := db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return nil, nil, err
	}
	var out []string
	for _, n := range names {
		if !strings.HasPrefix(n, "system.") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return db, out, nil
}

// mongoBackend is the Executor's Mongo side for one environment.
type mongoBackend struct {
	x   *Executor
	env Env
}

// each runs fn on every collection of the target and collects its counts.
func (b mongoBackend) each(ctx context.Context, t Target, verb string, fn func(c *mongo.Collection) (int64, error)) ([]Count, error) {
	db, colls, err := b.x.collections(ctx, b.env, t)
	if err != nil {
		return nil, err
	}
	var out []Count
	for _, name := range colls {
		n, err := fn(db.Collection(name))
		if err != nil {
			return out, fmt.Errorf("%s %s.%s: %w", verb, t.Database, name, err)
		}
		out = append(out, Count{What: t.Database + "." + name, N: n})
	}
	return out, nil
}

func (b mongoBackend) count(ctx context.Context, t Target) ([]Count, error) {
	return b.each(ctx, t, "count", func(c *mongo.Collection) (int64, error) { return c.CountDocuments(ctx, bson.D{}) })
}

// wipe deletes every document of the target's collections, keeping the
// collections and their indexes.
func (b mongoBackend) wipe(ctx context.Context, t Target) ([]Count, error) {
	return b.each(ctx, t, "delete from", func(c *mongo.Collection) (int64, error) {
		r, err := c.DeleteMany(ctx, bson.D{})
		if err != nil {
			return 0, err
		}
		return r.DeletedCount, nil
	})
}

// backup writes each collection as canonical extended JSON, one document
// per line: <dir>/<collection>.jsonl.
func (b mongoBackend) backup(ctx context.Context, t Target, dir string) (int64, error) {
	counts, err := b.each(ctx, t, "export", func(c *mongo.Collection) (int64, error) {
		return exportCollection(ctx, c, filepath.Join(dir, c.Name()+".jsonl"))
	})
	return total(counts), err
}

func exportCollection(ctx context.Context, c *mongo.Collection, path string) (int64, error) {
	var n int64
	err := writeBackup(path, func(w io.Writer) error {
		cur, err := c.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return err
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			line, err := bson.MarshalExtJSON(cur.Current, true, false)
			if err != nil {
				return err
			}
			if _, err := w.Write(append(line, '\n')); err != nil {
				return err
			}
			n++
		}
		return cur.Err()
	})
	return n, err
}

// restore inserts the backed-up documents again; documents that are there
// already (same _id) are left as they are.
func (b mongoBackend) restore(ctx context.Context, t Target, dir string) (int64, error) {
	c, err := b.x.mongoClient(b.env)
	if err != nil {
		return 0, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, path := range files {
		coll := c.Database(t.Database).Collection(strings.TrimSuffix(filepath.Base(path), ".jsonl"))
		n, err := importCollection(ctx, coll, path)
		total += n
		if err != nil {
			return total, fmt.Errorf("import %s: %w", filepath.Base(path), err)
		}
	}
	return total, nil
}

func importCollection(ctx context.Context, c *mongo.Collection, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var n int64
	var batch []any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		r, err := c.InsertMany(ctx, batch, options.InsertMany().SetOrdered(false))
		if r != nil {
			n += int64(len(r.InsertedIDs))
		}
		batch = batch[:0]
		var bwe mongo.BulkWriteException
		if errors.As(err, &bwe) {
			for _, we := range bwe.WriteErrors {
				if we.Code != 11000 { // duplicate key: the document is back already
					return err
				}
			}
			return nil
		}
		return err
	}
	for sc.Scan() {
		var doc bson.D
		if err := bson.UnmarshalExtJSON(sc.Bytes(), true, &doc); err != nil {
			return n, err
		}
		batch = append(batch, doc)
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	return n, flush()
}
