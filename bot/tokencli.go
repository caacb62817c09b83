package bot

// `opsbot token create|list|revoke`: API tokens, through the running bot
// (the admin endpoints, with the admin token) or, when none runs, on the
// state directly.

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
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

// tokenName is what a token may be called.
var tokenName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// tokenRequest is the body of POST /admin/tokens.
type tokenRequest struct {
	Name    string   `json:"name"`
	User    string   `json:"user"`
	Scopes  []string `json:"scopes"`
	Expires string   `json:"expires"` // a duration such as 90d, or ""
}

// tokenCreated answers it: the secret, shown once.
type tokenCreated struct {
	Token   string    `json:"token"`
	Name    string    `json:"name"`
	User    string    `json:"user"`
	Scopes  []string  `json:"scopes"`
	Expires time.Time `json:"expires,omitzero"`
}

// tokenInfo is a token as listed: never its secret or hash.
type tokenInfo struct {
	Name      string    `json:"name"`
	User      string    `json:"user"`
	Scopes    []string  `json:"scopes"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	Expires   time.Time `json:"expires,omitzero"`
	Revoked   time.Time `json:"revoked,omitzero"`
}

// checkTokenRequest validates a request; the error says what is wrong
// with an example of right.
func checkTokenRequest(req *tokenRequest, now time.Time) (time.Time, error) {
	req.Name, req.User = strings.ToLower(req.Name), state.NormName(req.User)
	if !tokenName.MatchString(req.Name) {
		return time.Time{}, fmt.Errorf("token name %q: lower-case letters, digits, dot, dash, underscore; e.g. --name gitlab-ci", req.Name)
	}
	if err := state.CheckName("user", req.User); err != nil || req.User == "" {
		return time.Time{}, fmt.Errorf("--as names the service user the token acts as, e.g. --as svc-ci")
	}
	if len(req.Scopes) == 0 {
		return time.Time{}, fmt.Errorf("--scopes: at least one of %s, e.g. --scopes tickets:create,tickets:read", strings.Join(Scopes, ", "))
	}
	for _, s := range req.Scopes {
		if !slices.Contains(Scopes, s) {
			return time.Time{}, fmt.Errorf("scope %q is not known%s; the scopes: %s", s, didYouMean(s, Scopes), strings.Join(Scopes, ", "))
		}
	}
	var exp time.Time
	if req.Expires != "" {
		var d flows.Duration
		if err := d.UnmarshalText([]byte(req.Expires)); err != nil || d.D() <= 0 {
			return time.Time{}, fmt.Errorf("--expires %q: a duration such as 90d or 720h", req.Expires)
		}
		exp = now.Add(d.D())
	}
	return exp, nil
}

func didYouMean(s string, xs []string) string {
	if c := flows.Closest(s, xs); c != "" {
		return fmt.Sprintf(" (did you mean %s?)", c)
	}
	return ""
}

// createToken makes a token and returns its secret (shown once).
func createToken(ctx context.Context, st *state.Store, req tokenRequest, by string, now time.Time) (tokenCreated, error) {
	exp, err := checkTokenRequest(&req, now)
	if err != nil {
		return tokenCreated{}, err
	}
	secret := newTokenSecret()
	t := state.APIToken{Name: req.Name, User: req.User, Scopes: req.Scopes, Hash: state.HashToken(secret), Created: now,
		CreatedBy: by, Expires: exp}
	audit := state.AuditEntry{At: now, User: by, Platform: "admin", Action: "token create",
		Args: fmt.Sprintf("name=%s as=%s scopes=%s expires=%s", req.Name, req.User, strings.Join(req.Scopes, ","), req.Expires), Result: "ok"}
	if err := st.CreateToken(ctx, t, audit); err != nil {
		if errors.Is(err, state.ErrTokenExists) {
			return tokenCreated{}, fmt.Errorf("a token named %s exists: revoke it first (opsbot token revoke %s) or choose another name", req.Name, req.Name)
		}
		return tokenCreated{}, err
	}
	return tokenCreated{Token: secret, Name: t.Name, User: t.User, Scopes: t.Scopes, Expires: exp}, nil
}

func listTokens(ctx context.Context, st *state.Store) ([]tokenInfo, error) {
	ts, err := st.Tokens(ctx)
	out := []tokenInfo{}
	for _, t := range ts {
		out = append(out, tokenInfo{Name: t.Name, User: t.User, Scopes: t.Scopes, Created: t.Created, CreatedBy: t.CreatedBy,
			Expires: t.Expires, Revoked: t.Revoked})
	}
	return out, err
}

func revokeToken(ctx context.Context, st *state.Store, name, by string, now time.Time) error {
	ok, err := st.RevokeToken(ctx, name, now, state.AuditEntry{At: now, User: by, Platform: "admin", Action: "token revoke",
		Args: "name=" + name, Result: "ok"})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no token named %s that is not revoked already (opsbot token list)", name)
	}
	return nil
}

// tokenAdmin serves /admin/tokens on the admin mux.
func (b *Bot) tokenAdmin(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req tokenRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": `want {"name": "ci", "user": "svc-ci", "scopes": ["tickets:create"], "expires": "90d"}`})
			return
		}
		out, err := createToken(r.Context(), b.store, req, "admin", b.now())
		if err != nil {
			writeJSONReply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSONReply(w, http.StatusCreated, out)
	})
	mux.HandleFunc("GET /admin/tokens", func(w http.ResponseWriter, r *http.Request) {
		out, err := listTokens(r.Context(), b.store)
		if err != nil {
			writeJSONReply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSONReply(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /admin/tokens/{name}/revoke", func(w http.ResponseWriter, r *http.Request) {
		if err := revokeToken(r.Context(), b.store, r.PathValue("name"), "admin", b.now()); err != nil {
			writeJSONReply(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSONReply(w, http.StatusOK, map[string]string{"revoked": r.PathValue("name")})
	})
}

// tokenMain is `opsbot token create|list|revoke`.
func tokenMain(args []string, load func(string) (*Config, error), stdout, stderr io.Writer) int {
	const help = `usage:
  opsbot token create [-config FILE] --name NAME --as USER --scopes SCOPE,... [--expires 90d]
  opsbot token list [-config FILE]
  opsbot token revoke [-config FILE] NAME
scopes: ` + "tickets:create, tickets:read, tickets:cancel, tickets:approve\n"
	if len(args) == 0 || !slices.Contains([]string{"create", "list", "revoke"}, args[0]) {
		fmt.Fprint(stderr, help)
		return 2
	}
	op := args[0]
	fs := flag.NewFlagSet("opsbot token "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (default: the embedded example)")
	name := fs.String("name", "", "create: the token's name, e.g. gitlab-ci")
	as := fs.String("as", "", "create: the service user it acts as, e.g. svc-ci")
	scopes := fs.String("scopes", "", "create: comma-separated scopes")
	expires := fs.String("expires", "", "create: lifetime, e.g. 90d (default: until revoked)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "opsbot:", err); return 1 }
	cfg, err := load(*cfgPath)
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	admin := newAdminClient(cfg, 30*time.Second)
	offline := func(fn func(st *state.Store) error) error { return withStore(ctx, cfg, fn) }
	// call asks the running bot; ok is false when none runs.
	call := func(method, path string, body any, out any) (bool, error) {
		var rd io.Reader
		if method == http.MethodPost {
			if body == nil {
				body = struct{}{}
			}
			raw, _ := json.Marshal(body)
			rd = bytes.NewReader(raw)
		}
		resp, err := admin.do(method, path, rd)
		if botDown(err) {
			return false, nil
		}
		if err != nil {
			return true, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 300 {
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(raw, &e)
			return true, errors.New(e.Error)
		}
		return true, json.Unmarshal(raw, out)
	}
	switch op {
	case "create":
		req := tokenRequest{Name: *name, User: *as, Expires: *expires}
		for _, s := range strings.Split(*scopes, ",") {
			if s = strings.TrimSpace(s); s != "" {
				req.Scopes = append(req.Scopes, s)
			}
		}
		if _, err := checkTokenRequest(&req, time.Now()); err != nil {
			return fail(err)
		}
		var out tokenCreated
		ran, err := call(http.MethodPost, "/admin/tokens", req, &out)
		if !ran && err == nil {
			err = offline(func(st *state.Store) error {
				out, err = createToken(ctx, st, req, "admin", time.Now())
				return err
			})
		}
		if err != nil {
			return fail(err)
		}
		exp := "never (revoke with opsbot token revoke " + out.Name + ")"
		if !out.Expires.IsZero() {
			exp = out.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(stderr, "token %s acts as %s with %s; expires %s.\nIt is shown once, here; only its hash is kept:\n",
			out.Name, out.User, strings.Join(out.Scopes, ","), exp)
		fmt.Fprintln(stdout, out.Token)
		return 0
	case "list":
		var out []tokenInfo
		ran, err := call(http.MethodGet, "/admin/tokens", nil, &out)
		if !ran && err == nil {
			err = offline(func(st *state.Store) error {
				out, err = listTokens(ctx, st)
				return err
			})
		}
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUSER\tSCOPES\tCREATED\tEXPIRES\tSTATE")
		for _, t := range out {
			stateWord, exp := "active", "never"
			if !t.Expires.IsZero() {
				exp = t.Expires.Format("2006-01-02")
				if !time.Now().Before(t.Expires) {
					stateWord = "expired"
				}
			}
			if !t.Revoked.IsZero() {
				stateWord = "revoked " + t.Revoked.Format("2006-01-02")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.User, strings.Join(t.Scopes, ","), t.Created.Format("2006-01-02"), exp, stateWord)
		}
		tw.Flush()
		return 0
	default: // revoke
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "opsbot token revoke: name the token, e.g. opsbot token revoke gitlab-ci")
			return 2
		}
		n := strings.ToLower(fs.Arg(0))
		var out map[string]string
		ran, err := call(http.MethodPost, "/admin/tokens/"+url.PathEscape(n)+"/revoke", nil, &out)
		if !ran && err == nil {
			err = offline(func(st *state.Store) error { return revokeToken(ctx, st, n, "admin", time.Now()) })
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "token %s revoked: requests with it are refused from now on\n", n)
		return 0
	}
}
