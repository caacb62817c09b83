package bot

// `opsbot audit export` and GET /admin/audit/export: the audit log as
// JSON lines, the same records the audit stream carries.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"opsbot/state"
)

// exportAudit writes the audit entries written in [since, until) as JSON
// lines (the audit stream's records), oldest first.
func exportAudit(ctx context.Context, st *state.Store, since, until time.Time, w io.Writer) (int, error) {
	var after uint64
	n := 0
	enc := json.NewEncoder(w)
	for {
		entries, err := st.AuditAfter(ctx, after, 512)
		if err != nil {
			return n, err
		}
		for _, a := range entries {
			after = a.Seq
			if (!since.IsZero() && a.At.Before(since)) || (!until.IsZero() && !a.At.Before(until)) {
				continue
			}
			if err := enc.Encode(AuditRecord{ID: fmt.Sprintf("audit-%d", a.Seq), AuditEntry: a}); err != nil {
				return n, err
			}
			n++
		}
		if len(entries) < 512 {
			return n, nil
		}
	}
}

// parseDay reads 2026-05-09 or an RFC 3339 time ("" is zero).
func parseDay(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.ParseInLocation("2006-01-02", s, time.Local)
	if err != nil {
		return t, fmt.Errorf("%q is not a date: write 2026-05-09 or 2026-05-09T08:00:00+08:00", s)
	}
	return t, nil
}

// auditMain is `opsbot audit export`.
func auditMain(args []string, load func(string) (*Config, error), stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(stderr, "usage: opsbot audit export [-config FILE] [--since 2026-05-01] [--until 2026-06-01] [--format jsonl]")
		return 2
	}
	fs := flag.NewFlagSet("opsbot audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: the embedded example)")
	sinceS := fs.String("since", "", "from this day or time (inclusive)")
	untilS := fs.String("until", "", "to this day or time (exclusive)")
	format := fs.String("format", "jsonl", "jsonl (one JSON object a line)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "opsbot:", err); return 1 }
	if *format != "jsonl" {
		return fail(fmt.Errorf("--format %q: only jsonl is written (one JSON object a line)", *format))
	}
	since, err := parseDay(*sinceS)
	if err != nil {
		return fail(fmt.Errorf("--since %w", err))
	}
	until, err := parseDay(*untilS)
	if err != nil {
		return fail(fmt.Errorf("--until %w", err))
	}
	cfg, err := load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339))
	}
	if !until.IsZero() {
		q.Set("until", until.Format(time.RFC3339))
	}
	resp, err := newAdminClient(cfg, 10*time.Minute).do(http.MethodGet, "/admin/audit/export?"+q.Encode(), nil)
	switch {
	case err == nil:
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fail(fmt.Errorf("export through the running bot: %s", strings.TrimSpace(string(b))))
		}
		if _, err := io.Copy(stdout, resp.Body); err != nil {
			return fail(err)
		}
		return 0
	case botDown(err):
		if err := withStore(context.Background(), cfg, func(st *state.Store) error {
			_, err := exportAudit(context.Background(), st, since, until, stdout)
			return err
		}); err != nil {
			return fail(err)
		}
		return 0
	}
	return fail(err)
}

// auditAdmin serves GET /admin/audit/export.
func (b *Bot) auditAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/audit/export", func(w http.ResponseWriter, r *http.Request) {
		since, err1 := parseDay(r.URL.Query().Get("since"))
		until, err2 := parseDay(r.URL.Query().Get("until"))
		if err := errors.Join(err1, err2); err != nil {
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		if _, err := exportAudit(r.Context(), b.store, since, until, w); err != nil {
			b.log.Error("audit export", "err", err)
		}
	})
}
