package bot

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

const usage = `opsbot: ChatOps approvals.

usage:
  opsbot [run] [-config FILE]        start the bot (embedded example config by default)
  opsbot config check [FILE]         validate a config and say what is wrong
  opsbot backup [-config FILE] DEST  hot, consistent, verified copy of the state (never over an existing file)
  opsbot backup -verify FILE         check a backup (or a stopped bot's state file)
  opsbot restore [-config FILE] BACKUP
                                     replace the state file with a verified backup (the bot must be stopped;
                                     the replaced file is kept beside it)
  opsbot migrate [-config FILE] -from bbolt:FILE|etcd:URLS -to bbolt:FILE|etcd:URLS [-check]
                                     copy a state between backends, exactly and restartably, checked
                                     record by record (the bot stopped on both)
  opsbot diagram [-config FILE]      print each flow as a Mermaid diagram
  opsbot inventory import [-config FILE] [-dry-run] FILE...
                                     import clusters/stores/servers (CSV or JSON); idempotent,
                                     reports each rejected row and why
  opsbot inventory export [-config FILE] [-format json|clusters.csv|stores.csv|servers.csv] [-o FILE]
  opsbot token create [-config FILE] --name NAME --as USER --scopes SCOPE,... [--expires 90d]
  opsbot token list|revoke NAME      API tokens for other systems (shown once, kept hashed)
  opsbot audit export [-config FILE] [--since DAY] [--until DAY] [--format jsonl]
                                     the audit log as JSON lines (the audit stream's records)
  opsbot gate --flow FLOW [--wait] [--timeout 4h] NAME=VALUE...
                                     a CI step: open a ticket through the API ($OPSBOT_URL, $OPSBOT_TOKEN)
                                     and wait; exit 0 done, 1 rejected/cancelled/expired, 3 timeout, 4 API error
`

// Main is the command line; it returns the exit code. embedded is the
// example configuration built into the binary.
func Main(args []string, embedded []byte, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("opsbot "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: the embedded example)")
	fail := func(err error) int { fmt.Fprintln(stderr, "opsbot:", err); return 1 }
	load := func() (*Config, error) {
		if *cfgPath == "" {
			wd, _ := os.Getwd()
			return ParseConfig(embedded, wd)
		}
		return LoadConfig(*cfgPath)
	}
	// loadPath loads a configuration file, or the embedded one.
	loadPath := func(path string) (*Config, error) {
		if path == "" {
			wd, _ := os.Getwd()
			return ParseConfig(embedded, wd)
		}
		return LoadConfig(path)
	}
	switch cmd {
	case "run":
		if err := fs.Parse(args); err != nil {
			return 2
		}
		cfg, err := load()
		if err != nil {
			return fail(err)
		}
		if errs := cfg.Check(cfg.Executors()); len(errs) > 0 {
			return fail(errors.Join(errs...))
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		b, err := New(ctx, Options{Config: cfg, Log: cfg.Logger(stderr)})
		if err != nil {
			return fail(err)
		}
		if err := b.Run(ctx); err != nil {
			return fail(err)
		}
		return 0
	case "config":
		if len(args) == 0 || args[0] != "check" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if len(args) > 1 {
			*cfgPath = args[1]
		}
		cfg, err := load()
		if err != nil {
			return fail(err)
		}
		errs := cfg.Check(cfg.Executors())
		if len(errs) == 0 && cfg.State.Backend == "etcd" {
			if err := reachEtcd(context.Background(), cfg); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			errs = append(errs, reachServers(context.Background(), cfg)...)
		}
		for _, e := range errs {
			fmt.Fprintln(stderr, "✗", e)
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintln(stderr, "⚠", w)
		}
		if len(errs) > 0 {
			fmt.Fprintf(stderr, "%d problem(s) found\n", len(errs))
			return 1
		}
		fl, _ := cfg.AllFlows(cfg.Executors())
		names := make([]string, len(fl))
		for i, f := range fl {
			names[i] = f.Name
		}
		fmt.Fprintf(stdout, "config OK: %d users, flows: %s\n", len(cfg.Users), strings.Join(names, ", "))
		return 0
	case "backup":
		verify := fs.Bool("verify", false, "check FILE instead of writing a backup")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "opsbot backup: name the file to write, e.g. opsbot backup /var/backups/opsbot-2026-05-09.db (or -verify FILE to check one)")
			return 2
		}
		if *verify {
			sum, err := state.Verify(fs.Arg(0))
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "backup OK: %s (%d bytes, schema %d, %d tickets, %d audit entries)\n", sum.Path, sum.Bytes, sum.Schema, sum.Tickets, sum.Audit)
			return 0
		}
		cfg, err := load()
		if err != nil {
			return fail(err)
		}
		dest, _ := filepath.Abs(fs.Arg(0))
		if err := BackupTo(cfg, dest, stdout); err != nil {
			return fail(err)
		}
		return 0
	case "restore":
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		cfg, err := load()
		if err != nil {
			return fail(err)
		}
		if cfg.State.Backend == "etcd" {
			return fail(fmt.Errorf("restore: the state is in etcd, not a file; put a backup back with "+
				"opsbot migrate -from bbolt:%s -to etcd:%s (stop the replicas first)", fs.Arg(0), strings.Join(cfg.State.Etcd.Endpoints, ",")))
		}
		aside, sum, err := state.Restore(fs.Arg(0), cfg.Resolve(cfg.State.Path))
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "restored %s from %s (schema %d, %d tickets)\n", sum.Path, fs.Arg(0), sum.Schema, sum.Tickets)
		if aside != "" {
			fmt.Fprintf(stdout, "the file it replaced is kept as %s\n", aside)
		}
		return 0
	case "diagram":
		if err := fs.Parse(args); err != nil {
			return 2
		}
		cfg, err := load()
		if err != nil {
			return fail(err)
		}
		// Every flow, including those whose integrations this config lacks.
		fl, err := cfg.AllFlows([]string{"script", "puppet", "zookeeper", "inventory", "dns", "cleanup", "servers"})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "# Flows\n\nGenerated by `make diagram` from the flows' transitions tables.")
		for _, f := range fl {
			fmt.Fprintf(stdout, "\n## %s: %s\n\n```mermaid\n%s```\n", f.Name, f.Title, f.Mermaid())
		}
		return 0
	case "migrate":
		return migrateMain(context.Background(), args, loadPath, stdout, stderr)
	case "inventory":
		return inventoryMain(args, loadPath, stdout, stderr)
	case "token":
		return tokenMain(args, loadPath, stdout, stderr)
	case "gate":
		return GateMain(args, stdout, stderr)
	case "audit":
		return auditMain(args, loadPath, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmds := []string{"run", "config", "backup", "restore", "migrate", "diagram", "inventory", "token", "gate", "audit", "help"}
	if c := flows.Closest(cmd, cmds); c != "" {
		fmt.Fprintf(stderr, "opsbot: unknown command %q: did you mean %q? (opsbot %s ...)\n", cmd, c, c)
		return 2
	}
	fmt.Fprintf(stderr, "opsbot: unknown command %q\n%s", cmd, usage)
	return 2
}

// BackupTo writes a hot, verified copy of the state to dest and reports
// it on out.
func BackupTo(cfg *Config, dest string, out io.Writer) error {
	n, err := backup(cfg, dest)
	if err == nil {
		fmt.Fprintf(out, "backup written and verified: %s (%d bytes)\n", dest, n)
	}
	return err
}

// backup streams a hot copy from a running bot (with the admin token) and
// writes it itself; with no bot running it opens the file read-only and
// copies it. Either way dest is created exclusively and verified.
func backup(cfg *Config, dest string) (int64, error) {
	if cfg.State.Backend == "etcd" {
		// Every replica and this command read the same cluster: a copy
		// at one revision needs no bot.
		st, cli, err := openStore(context.Background(), cfg, true)
		if err != nil {
			return 0, err
		}
		defer cli.Close()
		defer st.Close()
		return st.Backup(dest)
	}
	live := cfg.Resolve(cfg.State.Path)
	resp, err := newAdminClient(cfg, 10*time.Minute).do(http.MethodGet, "/admin/backup", nil)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return 0, fmt.Errorf("backup through the running bot: %s", strings.TrimSpace(string(body)))
		}
		return state.WriteBackup(dest, live, func(w io.Writer) error {
			_, err := io.Copy(w, resp.Body)
			return err
		})
	}
	if !botDown(err) {
		return 0, err
	}
	st, err := state.Open(state.Options{Path: live, ReadOnly: true, OpenTimeout: cfg.State.OpenTimeout.D()})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.Backup(dest)
}
