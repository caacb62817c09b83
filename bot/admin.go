package bot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/integrations/inventory"
	"opsbot/state"
)

// maxImportBytes bounds an inventory import body. An import is decoded as
// it streams in, one at a time, so memory stays bounded whatever is sent.
const maxImportBytes = 32 << 20

// backupName is what a backup requested over HTTP may be called: a plain
// file name inside the backup directory, no path.
var backupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// importRequest is the body of POST /admin/inventory/import.
type importRequest struct {
	Document inventory.Document   `json:"document"`
	Rejected []inventory.Rejected `json:"rejected"`
	DryRun   bool                 `json:"dry_run"`
}

// adminHandler serves the operator endpoints. The caller wraps it in the
// token check and the loopback guard.
func (b *Bot) adminHandler() http.Handler {
	mux := http.NewServeMux()
	b.tokenAdmin(mux)
	b.auditAdmin(mux)
	audit := func(r *http.Request, action, args, result string) {
		b.audit.Add(r.Context(), state.AuditEntry{At: b.now(), User: "admin", Platform: "admin", Action: action,
			Args: Truncate(args, b.cfg.Audit.MaxArgs), Result: Truncate(result, 300)})
	}
	// POST /admin/backup writes a verified backup into the backup
	// directory: {"name": "before-upgrade.db"}, or no name for a dated one.
	mux.HandleFunc("POST /admin/backup", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name string `json:"name"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": `want {"name": "before-upgrade.db"} (a file name in the backup directory) or {}`})
			return
		}
		if req.Name == "" {
			req.Name = "opsbot-" + b.now().UTC().Format("20060102T150405Z") + ".db"
		}
		if !backupName.MatchString(req.Name) {
			audit(r, "backup", endpoint.Clip(req.Name, 80), "refused: not a plain file name")
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(
				"name %q: backups over HTTP go into the backup directory; give a plain file name like before-upgrade.db", endpoint.Clip(req.Name, 80))})
			return
		}
		dir := b.cfg.Resolve(b.cfg.State.BackupDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			writeJSONReply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		path := filepath.Join(dir, req.Name)
		n, err := b.store.Backup(path)
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, state.ErrExists) {
				code = http.StatusConflict
			}
			audit(r, "backup", req.Name, "refused: "+err.Error())
			writeJSONReply(w, code, map[string]string{"error": err.Error()})
			return
		}
		b.lastBackup.Store(b.now().Unix())
		audit(r, "backup", req.Name, fmt.Sprintf("ok, %d bytes, verified", n))
		writeJSONReply(w, http.StatusOK, map[string]any{"path": path, "bytes": n})
	})
	// GET /admin/backup streams a consistent copy to the CLI, which writes
	// and verifies it where the operator asked.
	mux.HandleFunc("GET /admin/backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		n, err := b.store.WriteTo(w)
		if err != nil {
			b.log.Error("stream a backup", "err", err)
			return
		}
		b.lastBackup.Store(b.now().Unix())
		audit(r, "backup stream", "", fmt.Sprintf("ok, %d bytes", n))
	})
	mux.HandleFunc("POST /admin/inventory/import", func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.importing <- struct{}{}:
			defer func() { <-b.importing }()
		default:
			writeJSONReply(w, http.StatusTooManyRequests, map[string]string{"error": "another inventory import is running; try again when it has finished"})
			return
		}
		var req importRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxImportBytes))
		if err := dec.Decode(&req); err != nil {
			code := http.StatusBadRequest
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				code = http.StatusRequestEntityTooLarge
			}
			writeJSONReply(w, code, map[string]string{"error": endpoint.Clip("bad import body: "+err.Error(), 300) +
				fmt.Sprintf(" (at most %d MiB; split larger inventories into several imports)", maxImportBytes>>20)})
			return
		}
		rep, err := b.inv.Import(r.Context(), req.Document, req.Rejected, req.DryRun)
		if err != nil {
			writeJSONReply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		audit(r, "inventory import", fmt.Sprintf("clusters=%d stores=%d dry_run=%v", rep.Clusters, rep.Stores, req.DryRun),
			fmt.Sprintf("ok, %d rejected", len(rep.Rejected)))
		writeJSONReply(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /admin/inventory/export", func(w http.ResponseWriter, r *http.Request) {
		if err := b.inv.Export(w, r.URL.Query().Get("format")); err != nil {
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		}
	})
	return mux
}

// adminClient is the CLI's side of the admin API: the running bot's
// address and the token from the same environment variable.
type adminClient struct {
	cfg    *Config
	client *http.Client
}

func newAdminClient(cfg *Config, timeout time.Duration) *adminClient {
	return &adminClient{cfg: cfg, client: &http.Client{Timeout: timeout}}
}

// errNoToken means a bot is running but this shell has no admin token.
var errNoToken = errors.New("no admin token")

// do sends a request to the running bot. A connection refused means no
// bot runs (botDown); a running bot without a token in this environment
// is an error that says what to set.
func (a *adminClient) do(method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+a.cfg.Listen+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := os.Getenv(a.cfg.Admin.TokenEnv); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		return nil, fmt.Errorf("a bot is running on %s and refused: %s: %w", a.cfg.Listen, e.Error, errNoToken)
	}
	return resp, nil
}
