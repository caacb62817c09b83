package bot

// opsbot migrate: copy a state between backends, exactly, restartably,
// and check the copy record by record.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"opsbot/state"
	"opsbot/state/kv"
)

const migrateUsage = `usage: opsbot migrate [-config FILE] -from SRC -to DST [-prefix P] [-check]

SRC and DST are bbolt:FILE or etcd:URL[,URL...] (etcd's TLS, user and key
prefix come from the config's state.etcd, or -prefix). The bot must be
stopped on both. The copy is exact (the target ends holding what the
source holds, nothing else), checked record by record, and restartable:
run the same command again after an interruption.

  opsbot migrate -from bbolt:data/opsbot.db -to etcd:https://10.0.0.1:2379,https://10.0.0.2:2379
  opsbot migrate -from etcd:https://10.0.0.1:2379 -to bbolt:/var/lib/opsbot/opsbot.db
  opsbot migrate -check -from bbolt:data/opsbot.db -to etcd:https://10.0.0.1:2379
`

// migrateMain runs `opsbot migrate`.
func migrateMain(ctx context.Context, args []string, load func(path string) (*Config, error), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("opsbot migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (TLS, user and prefix of etcd)")
	from := fs.String("from", "", "the state to copy: bbolt:FILE or etcd:URL[,URL...]")
	to := fs.String("to", "", "where to copy it: bbolt:FILE or etcd:URL[,URL...]")
	prefix := fs.String("prefix", "", "etcd key prefix (default: state.etcd.prefix, opsbot/)")
	check := fs.Bool("check", false, "compare only: change nothing, say whether the two are identical")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, migrateUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "opsbot migrate:", err); return 1 }
	cfg, err := load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	if *prefix != "" {
		cfg.State.Etcd.Prefix = *prefix
	}
	src, closeSrc, err := openEnd(ctx, cfg, *from, false)
	if err != nil {
		return fail(fmt.Errorf("-from %s: %w", *from, err))
	}
	defer closeSrc()
	dst, closeDst, err := openEnd(ctx, cfg, *to, !*check)
	if err != nil {
		return fail(fmt.Errorf("-to %s: %w", *to, err))
	}
	defer closeDst()
	if *check {
		st, err := state.Sync(ctx, src.KV(), dst.KV(), false)
		if err != nil {
			return fail(err)
		}
		if st.Differs() {
			fmt.Fprintf(stdout, "different: %d records the same, %d missing, %d changed, %d extra in %s (first: %s)\n",
				st.Same, st.Added, st.Changed, st.Removed, *to, st.First)
			return 1
		}
		fmt.Fprintf(stdout, "identical: %d records\n", st.Same)
		return 0
	}
	if err := claimTarget(ctx, src, dst, *from); err != nil {
		return fail(err)
	}
	began := time.Now()
	st, err := state.Sync(ctx, src.KV(), dst.KV(), true)
	if err == nil {
		err = dst.Flush()
	}
	if err != nil {
		return fail(fmt.Errorf("%w (run the same command again to finish the copy)", err))
	}
	fmt.Fprintf(stdout, "copied: %d records written, %d changed, %d removed, %d already there (%s)\n", st.Added, st.Changed, st.Removed, st.Same,
		time.Since(began).Round(time.Millisecond))
	began = time.Now()
	chk, err := state.Sync(ctx, src.KV(), dst.KV(), false)
	if err != nil {
		return fail(fmt.Errorf("check the copy: %w", err))
	}
	if chk.Differs() {
		return fail(fmt.Errorf("the copy differs from the source (first: %s); was a bot running on either?", chk.First))
	}
	fmt.Fprintf(stdout, "verified: %s and %s are identical, record by record (%d records, %s)\n", *from, *to, chk.Same,
		time.Since(began).Round(time.Millisecond))
	return 0
}

// copyKey opens the stores a migration copies between: records are copied
// as they are (sealed ones stay sealed with the installation's own key,
// which the copy never needs), so no real key is read.
var copyKey = []byte("opsbot migrate copies records as they are")

// openEnd opens one side of a migration: bbolt:FILE or etcd:URLS. A bot
// running on it is refused (bbolt: its file lock; etcd: live replicas).
func openEnd(ctx context.Context, cfg *Config, spec string, create bool) (*state.Store, func(), error) {
	kind, where, _ := strings.Cut(spec, ":")
	switch kind {
	case "bbolt":
		if where == "" {
			return nil, nil, errors.New("name the file: bbolt:data/opsbot.db")
		}
		path, _ := filepath.Abs(where)
		if _, err := os.Stat(path); err != nil && !create {
			return nil, nil, err
		}
		// A target is filled without an fsync a batch, and synced once at
		// the end (a copy cut short is finished by running it again).
		st, err := state.Open(state.Options{Path: path, OpenTimeout: cfg.State.OpenTimeout.D(), Bulk: create,
			Key: copyKey})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Flush(); st.Close() }, nil
	case "etcd":
		if where == "" {
			return nil, nil, errors.New("name the members: etcd:https://10.0.0.1:2379,https://10.0.0.2:2379")
		}
		c := *cfg
		c.State.Backend = "etcd"
		c.State.Etcd.Endpoints = strings.Split(where, ",")
		cli, err := etcdClient(&c)
		if err != nil {
			return nil, nil, err
		}
		st, err := state.OpenEtcd(ctx, cli, state.EtcdOptions{Prefix: c.State.Etcd.Prefix, Key: copyKey})
		if err != nil {
			cli.Close()
			return nil, nil, err
		}
		live, err := st.Replica("opsbot-migrate", 0, nil).Members(ctx)
		if err != nil {
			cli.Close()
			return nil, nil, err
		}
		if len(live) > 0 {
			cli.Close()
			return nil, nil, fmt.Errorf("%d bot replica(s) use this state (%s): stop them first", len(live), strings.Join(live, ", "))
		}
		return st, func() { cli.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%q: say bbolt:FILE or etcd:URL[,URL...]", spec)
}

// claimTarget refuses a target that holds another state, and marks it as
// the copy of this source (so that a copy cut short is resumed, and only
// from the same source).
func claimTarget(ctx context.Context, src, dst *state.Store, from string) error {
	mark := []byte(from + " -> " + dst.Path())
	return dst.KV().Update(ctx, func(tx kv.Txn) error {
		had, ok, err := tx.Get(state.MigrationKey)
		if err != nil {
			return err
		}
		if ok {
			if !strings.HasPrefix(string(had), from+" -> ") {
				return fmt.Errorf("%s is being filled from another state (%s); finish that, or use another prefix or file", dst.Path(), had)
			}
			return nil
		}
		// Anything beyond the schema (and sequences) means a state of its own.
		for _, table := range []string{"tickets/", "audit/", "users/"} {
			kvs, err := tx.Range(table, "", 1)
			if err != nil {
				return err
			}
			if len(kvs) > 0 {
				return fmt.Errorf("%s already holds a state of its own (%s...); copy into an empty one (another prefix or file)", dst.Path(), strings.TrimSuffix(table, "/"))
			}
		}
		return tx.Put(state.MigrationKey, mark)
	})
}
