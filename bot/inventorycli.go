package bot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"opsbot/integrations/inventory"
	"opsbot/state"
)

func writeJSONReply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// readInventoryFiles reads CSV (clusters or stores, told apart by the
// header) and JSON files into one document.
func readInventoryFiles(paths []string) (inventory.Document, []inventory.Rejected, error) {
	var doc inventory.Document
	var bad []inventory.Rejected
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return doc, nil, err
		}
		name := filepath.Base(p)
		if strings.HasSuffix(strings.ToLower(p), ".json") {
			var d inventory.Document
			dec := json.NewDecoder(f)
			dec.DisallowUnknownFields()
			err = dec.Decode(&d)
			f.Close()
			if err != nil {
				return doc, nil, fmt.Errorf("%s: %w", name, err)
			}
			doc.Clusters = append(doc.Clusters, d.Clusters...)
			doc.Stores = append(doc.Stores, d.Stores...)
			doc.Servers = append(doc.Servers, d.Servers...)
			continue
		}
		d, rej, err := inventory.ReadCSV(f, name)
		f.Close()
		if err != nil {
			return doc, nil, err
		}
		doc.Clusters = append(doc.Clusters, d.Clusters...)
		doc.Stores = append(doc.Stores, d.Stores...)
		doc.Servers = append(doc.Servers, d.Servers...)
		bad = append(bad, rej...)
	}
	return doc, bad, nil
}

// botDown reports whether err means no bot is listening.
func botDown(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// inventoryMain is `opsbot inventory import|export`.
func inventoryMain(args []string, load func(string) (*Config, error), stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "import" && args[0] != "export") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	op := args[0]
	fs := flag.NewFlagSet("opsbot inventory "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: the embedded example)")
	dry := fs.Bool("dry-run", false, "import: check and report, write nothing")
	format := fs.String("format", "json", "export: json, clusters.csv, stores.csv or servers.csv")
	outPath := fs.String("o", "", "export: write to this file instead of stdout")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "opsbot:", err); return 1 }
	cfg, err := load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	admin := newAdminClient(cfg, 5*time.Minute)
	ctx := context.Background()
	withInventory := func(fn func(inv *inventory.Inventory) error) error {
		return withStore(ctx, cfg, func(st *state.Store) error {
			return withInventoryOf(ctx, cfg, st, fn)
		})
	}
	if op == "export" {
		var out io.Writer = stdout
		if *outPath != "" {
			f, err := os.Create(*outPath)
			if err != nil {
				return fail(err)
			}
			defer f.Close()
			out = f
		}
		resp, err := admin.do(http.MethodGet, "/admin/inventory/export?format="+url.QueryEscape(*format), nil)
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				return fail(fmt.Errorf("export through the running bot: %s", strings.TrimSpace(string(body))))
			}
			_, err = io.Copy(out, resp.Body)
			if err != nil {
				return fail(err)
			}
			return 0
		}
		if !botDown(err) {
			return fail(err)
		}
		if err := withInventory(func(inv *inventory.Inventory) error { return inv.Export(out, *format) }); err != nil {
			return fail(err)
		}
		return 0
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "opsbot inventory import: name the files, e.g. opsbot inventory import clusters.csv stores.csv")
		return 2
	}
	doc, rejected, err := readInventoryFiles(fs.Args())
	if err != nil {
		return fail(err)
	}
	var rep inventory.Report
	body, _ := json.Marshal(importRequest{Document: doc, Rejected: rejected, DryRun: *dry})
	resp, err := admin.do(http.MethodPost, "/admin/inventory/import", bytes.NewReader(body))
	switch {
	case err == nil:
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fail(fmt.Errorf("import through the running bot: %s", strings.TrimSpace(string(b))))
		}
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			return fail(err)
		}
	case botDown(err):
		if err := withInventory(func(inv *inventory.Inventory) error {
			rep, err = inv.Import(ctx, doc, rejected, *dry)
			return err
		}); err != nil {
			return fail(err)
		}
	default:
		return fail(err)
	}
	fmt.Fprint(stdout, rep.String())
	if len(rep.Rejected) > 0 {
		return 1
	}
	return 0
}

// withStore runs fn on the state itself, when no bot runs: the file (no
// bot holds it), or etcd, which every replica and the command share.
func withStore(ctx context.Context, cfg *Config, fn func(st *state.Store) error) error {
	st, cli, err := openStore(ctx, cfg, false)
	if err != nil {
		return fmt.Errorf("%w (is a bot running with another listen address?)", err)
	}
	defer st.Close()
	if cli != nil {
		defer cli.Close()
	}
	return fn(st)
}

// withInventoryOf runs fn on the inventory of st with cfg's rules.
func withInventoryOf(ctx context.Context, cfg *Config, st *state.Store, fn func(inv *inventory.Inventory) error) error {
	cl := cfg.Clusters
	inv, err := inventory.New(ctx, st, inventory.Rules{Sizes: cl.Sizes, WarnAt: cl.WarnAt, MaxDOShare: cl.MaxDOShare,
		MixTolerance: cl.MixTolerance, MixMinStores: cl.MixMinStores})
	if err != nil {
		return err
	}
	return fn(inv)
}
