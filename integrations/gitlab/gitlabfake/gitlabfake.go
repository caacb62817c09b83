// Package gitlabfake serves the GitLab REST v4 endpoints opsbot uses over
// a real bare git repository: branches, merge requests merged with a real
// `git merge --no-ff`, reverts made with a real `git revert -m 1`,
// compares and raw files. Ref updates are compare-and-swap
// (`git update-ref new old`), so conflicts and failed reverts happen as in
// life. Token auth is enforced, answers use GitLab's status codes and
// error shapes, and latency and failures can be injected.
package gitlabfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Project is the project path the fake serves.
const Project = "infra/puppet"

// MR is a merge request as the fake keeps it.
type MR struct {
	ID             int64  `json:"id"`
	IID            int64  `json:"iid"`
	ProjectID      int64  `json:"project_id"`
	Title          string `json:"title"`
	State          string `json:"state"` // opened, merged, closed
	SourceBranch   string `json:"source_branch"`
	TargetBranch   string `json:"target_branch"`
	SHA            string `json:"sha"`
	MergeCommitSHA string `json:"merge_commit_sha,omitempty"`
	MergeStatus    string `json:"merge_status"`
	HasConflicts   bool   `json:"has_conflicts"`
	WebURL         string `json:"web_url"`
	CreatedAt      string `json:"created_at"`
}

// Fake is a fake GitLab over a real bare repository.
type Fake struct {
	t     testing.TB
	srv   *httptest.Server
	Token string
	dir   string
	bare  string

	mu       sync.Mutex // guards the fields below
	branches sync.Map   // branch -> *sync.Mutex: one write at a time per branch
	mrs      []*MR
	calls    []string
	latency  time.Duration
	failNext int
	failCode int
}

// New creates a bare repository with one commit on main and serves it.
func New(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{t: t, Token: "glpat-fake-token-0123456789", dir: t.TempDir()}
	f.bare = filepath.Join(f.dir, "repo.git")
	f.git("", "init", "--bare", "--initial-branch=main", f.bare)
	seed := filepath.Join(f.dir, "seed")
	f.git("", "clone", "-q", f.bare, seed)
	os.WriteFile(filepath.Join(seed, "README.md"), []byte("puppet control repo\n"), 0o644)
	f.git(seed, "add", ".")
	f.git(seed, "commit", "-q", "-m", "initial")
	f.git(seed, "push", "-q", "origin", "HEAD:main")
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v4/", f.route)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the base URL for the client ("http://127.0.0.1:port/api/v4").
func (f *Fake) URL() string { return f.srv.URL + "/api/v4" }

// SetLatency delays every API answer.
func (f *Fake) SetLatency(d time.Duration) {
	f.mu.Lock()
	f.latency = d
	f.mu.Unlock()
}

// FailNext makes the next n API calls answer status (e.g. 502).
func (f *Fake) FailNext(n, status int) {
	f.mu.Lock()
	f.failNext, f.failCode = n, status
	f.mu.Unlock()
}

// Calls returns "METHOD path" of every API call so far.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// MRs returns the merge requests.
func (f *Fake) MRs() []MR {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]MR, len(f.mrs))
	for i, m := range f.mrs {
		out[i] = *m
	}
	return out
}

func gitEnv() []string {
	return append(os.Environ(), "GIT_AUTHOR_NAME=opsbot-fake", "GIT_AUTHOR_EMAIL=fake@example.com",
		"GIT_COMMITTER_NAME=opsbot-fake", "GIT_COMMITTER_EMAIL=fake@example.com", "GIT_TERMINAL_PROMPT=0")
}

// run runs git in dir and returns its trimmed output.
func run(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return strings.TrimSpace(out.String()), fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func (f *Fake) git(dir string, args ...string) string {
	f.t.Helper()
	out, err := run(dir, args...)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// Branch creates branch at ref (a test set-up helper).
func (f *Fake) Branch(name, ref string) {
	f.t.Helper()
	sha := f.git(f.bare, "rev-parse", ref)
	f.git(f.bare, "update-ref", "refs/heads/"+name, sha)
}

// Commit writes files on branch as one commit and returns its sha (a test
// set-up helper, like a person pushing).
func (f *Fake) Commit(branch, message string, files map[string]string) string {
	f.t.Helper()
	defer f.lockBranch(branch)()
	wt, base, cleanup, err := f.worktree(branch)
	if err != nil {
		f.t.Fatal(err)
	}
	defer cleanup()
	for p, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(wt, p)), 0o755)
		os.WriteFile(filepath.Join(wt, p), []byte(content), 0o644)
	}
	f.git(wt, "add", "-A")
	f.git(wt, "commit", "-q", "-m", message)
	sha, err := f.advance(wt, branch, base)
	if err != nil {
		f.t.Fatal(err)
	}
	return sha
}

// Read returns a file's content on a ref, or "" when it is missing.
func (f *Fake) Read(ref, path string) string {
	out, err := run(f.bare, "show", ref+":"+path)
	if err != nil {
		return ""
	}
	return out
}

// Head returns a branch's commit.
func (f *Fake) Head(branch string) string {
	out, _ := run(f.bare, "rev-parse", "--verify", "-q", "refs/heads/"+branch)
	return out
}

// lockBranch serializes writes to one branch (writes to different
// branches run side by side; the ref update is a compare-and-swap anyway).
func (f *Fake) lockBranch(branch string) func() {
	m, _ := f.branches.LoadOrStore(branch, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// worktree checks branch out in a temporary worktree of the bare repo and
// returns the commit it started from.
func (f *Fake) worktree(branch string) (wt, base string, cleanup func(), err error) {
	base = f.Head(branch)
	wt, err = os.MkdirTemp(f.dir, "wt-")
	if err != nil {
		return "", "", nil, err
	}
	os.Remove(wt)
	if _, err := run(f.bare, "worktree", "add", "-q", "--detach", wt, base); err != nil {
		return "", "", nil, err
	}
	return wt, base, func() { _, _ = run(f.bare, "worktree", "remove", "--force", wt) }, nil
}

// advance moves branch from base to the worktree's HEAD with a
// compare-and-swap on the ref: if the branch moved meanwhile, it fails and
// nothing changes.
func (f *Fake) advance(wt, branch, base string) (string, error) {
	newSHA, err := run(wt, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	if _, err := run(f.bare, "update-ref", "refs/heads/"+branch, newSHA, base); err != nil {
		return "", err
	}
	return newSHA, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func message(w http.ResponseWriter, status int, msg any) {
	writeJSON(w, status, map[string]any{"message": msg})
}

// route dispatches /api/v4/projects/:id/... after auth, latency and
// injected failures.
func (f *Fake) route(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	latency := f.latency
	fail := f.failNext > 0
	code := f.failCode
	if fail {
		f.failNext--
	}
	f.mu.Unlock()
	time.Sleep(latency)
	if r.Header.Get("PRIVATE-TOKEN") != f.Token {
		message(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	if fail {
		message(w, code, fmt.Sprintf("%d injected failure", code))
		return
	}
	// client-go escapes the project path into one segment: infra%2Fpuppet.
	raw := strings.TrimPrefix(r.URL.EscapedPath(), "/api/v4/projects/")
	pid, rest, _ := strings.Cut(raw, "/")
	if p, _ := url.PathUnescape(pid); p != Project && pid != "1" {
		message(w, http.StatusNotFound, "404 Project Not Found")
		return
	}
	parts := strings.Split(rest, "/")
	for i := range parts {
		parts[i], _ = url.PathUnescape(parts[i])
	}
	_ = r.ParseForm()
	body := map[string]any{}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		_ = json.NewDecoder(r.Body).Decode(&body)
	}
	param := func(k string) string {
		if v, ok := body[k]; ok {
			return fmt.Sprint(v)
		}
		return r.Form.Get(k)
	}
	switch {
	case len(parts) == 3 && parts[0] == "repository" && parts[1] == "branches" && r.Method == http.MethodGet:
		f.getBranch(w, parts[2])
	case len(parts) == 2 && parts[0] == "repository" && parts[1] == "branches" && r.Method == http.MethodPost:
		f.createBranch(w, param("branch"), param("ref"))
	case len(parts) == 3 && parts[0] == "repository" && parts[1] == "branches" && r.Method == http.MethodDelete:
		f.deleteBranch(w, parts[2])
	case len(parts) == 1 && parts[0] == "merge_requests" && r.Method == http.MethodPost:
		f.createMR(w, param("source_branch"), param("target_branch"), param("title"))
	case len(parts) == 1 && parts[0] == "merge_requests" && r.Method == http.MethodGet:
		f.listMRs(w, r.Form.Get("source_branch"), r.Form.Get("target_branch"), r.Form.Get("state"))
	case len(parts) == 2 && parts[0] == "merge_requests" && r.Method == http.MethodGet:
		f.withMR(w, parts[1], func(m *MR) {
			f.mu.Lock()
			cur := *m
			f.mu.Unlock()
			writeJSON(w, http.StatusOK, cur)
		})
	case len(parts) == 3 && parts[0] == "merge_requests" && parts[2] == "merge" && r.Method == http.MethodPut:
		f.withMR(w, parts[1], func(m *MR) { f.merge(w, m) })
	case len(parts) == 4 && parts[0] == "repository" && parts[1] == "commits" && parts[3] == "revert" && r.Method == http.MethodPost:
		f.revert(w, parts[2], param("branch"))
	case len(parts) == 2 && parts[0] == "repository" && parts[1] == "compare":
		f.compare(w, r.Form.Get("from"), r.Form.Get("to"))
	case len(parts) == 4 && parts[0] == "repository" && parts[1] == "files" && parts[3] == "raw":
		f.rawFile(w, parts[2], r.Form.Get("ref"))
	default:
		message(w, http.StatusNotFound, "404 Not Found")
	}
}

func branchJSON(name, sha string) map[string]any {
	return map[string]any{"name": name, "merged": false, "protected": false, "default": name == "main",
		"commit": map[string]any{"id": sha, "short_id": sha[:8]}}
}

func (f *Fake) getBranch(w http.ResponseWriter, name string) {
	sha := f.Head(name)
	if sha == "" {
		message(w, http.StatusNotFound, "404 Branch Not Found")
		return
	}
	writeJSON(w, http.StatusOK, branchJSON(name, sha))
}

func (f *Fake) createBranch(w http.ResponseWriter, name, ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "" || ref == "" {
		message(w, http.StatusBadRequest, "branch and ref are required")
		return
	}
	if f.Head(name) != "" {
		message(w, http.StatusBadRequest, "Branch already exists")
		return
	}
	sha, err := run(f.bare, "rev-parse", "--verify", "-q", ref+"^{commit}")
	if err != nil || sha == "" {
		message(w, http.StatusBadRequest, "Invalid reference name: "+ref)
		return
	}
	// Create only if absent: the zero old value makes this a CAS too.
	if _, err := run(f.bare, "update-ref", "refs/heads/"+name, sha, strings.Repeat("0", 40)); err != nil {
		message(w, http.StatusBadRequest, "Branch already exists")
		return
	}
	writeJSON(w, http.StatusCreated, branchJSON(name, sha))
}

func (f *Fake) deleteBranch(w http.ResponseWriter, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Head(name) == "" {
		message(w, http.StatusNotFound, "404 Branch Not Found")
		return
	}
	if _, err := run(f.bare, "update-ref", "-d", "refs/heads/"+name); err != nil {
		message(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *Fake) createMR(w http.ResponseWriter, source, target, title string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Head(source) == "" || f.Head(target) == "" {
		message(w, http.StatusNotFound, "404 Branch Not Found")
		return
	}
	for _, m := range f.mrs {
		if m.State == "opened" && m.SourceBranch == source && m.TargetBranch == target {
			message(w, http.StatusConflict, []string{fmt.Sprintf("Another open merge request already exists for this source branch: !%d", m.IID)})
			return
		}
	}
	iid := int64(len(f.mrs) + 1)
	m := &MR{ID: 1000 + iid, IID: iid, ProjectID: 1, Title: title, State: "opened", SourceBranch: source, TargetBranch: target,
		SHA: f.Head(source), MergeStatus: "can_be_merged", WebURL: fmt.Sprintf("%s/%s/-/merge_requests/%d", f.srv.URL, Project, iid),
		CreatedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	f.mrs = append(f.mrs, m)
	writeJSON(w, http.StatusCreated, m)
}

func (f *Fake) listMRs(w http.ResponseWriter, source, target, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*MR{}
	for i := len(f.mrs) - 1; i >= 0; i-- { // newest first, as GitLab lists them
		m := f.mrs[i]
		if (source == "" || m.SourceBranch == source) && (target == "" || m.TargetBranch == target) && (state == "" || state == "all" || m.State == state) {
			out = append(out, m)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *Fake) withMR(w http.ResponseWriter, iid string, fn func(*MR)) {
	n, _ := strconv.ParseInt(iid, 10, 64)
	f.mu.Lock()
	var m *MR
	for _, x := range f.mrs {
		if x.IID == n {
			m = x
		}
	}
	f.mu.Unlock()
	if m == nil {
		message(w, http.StatusNotFound, "404 Not found")
		return
	}
	fn(m)
}

// merge does a real no-fast-forward merge of the MR's source into its
// target: `git merge-tree --write-tree` (git's merge machinery, without a
// worktree), a merge commit with both parents, and a compare-and-swap of
// the target ref.
func (f *Fake) merge(w http.ResponseWriter, m *MR) {
	f.mu.Lock()
	target := m.TargetBranch
	f.mu.Unlock()
	defer f.lockBranch(target)()
	f.mu.Lock()
	cur := *m
	f.mu.Unlock()
	if cur.State != "opened" {
		message(w, http.StatusMethodNotAllowed, "405 Method Not Allowed")
		return
	}
	base, src := f.Head(cur.TargetBranch), f.Head(cur.SourceBranch)
	tree, err := run(f.bare, "merge-tree", "--write-tree", "--no-messages", base, src)
	if err != nil {
		f.mu.Lock()
		m.HasConflicts, m.MergeStatus = true, "cannot_be_merged"
		f.mu.Unlock()
		message(w, http.StatusNotAcceptable, "Branch cannot be merged") // GitLab names no files here
		return
	}
	tree = strings.Fields(tree)[0]
	msg := fmt.Sprintf("Merge branch '%s' into '%s'\n\n%s\n\nSee merge request %s!%d", cur.SourceBranch, cur.TargetBranch, cur.Title, Project, cur.IID)
	sha, err := run(f.bare, "commit-tree", tree, "-p", base, "-p", src, "-m", msg)
	if err == nil {
		_, err = run(f.bare, "update-ref", "refs/heads/"+cur.TargetBranch, sha, base)
	}
	if err != nil {
		message(w, http.StatusConflict, "Branch cannot be merged: the target moved")
		return
	}
	f.mu.Lock()
	m.State, m.MergeCommitSHA, m.MergeStatus = "merged", sha, "merged"
	out := *m
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// revert does a real `git revert` (of a merge: `-m 1`) onto branch.
func (f *Fake) revert(w http.ResponseWriter, sha, branch string) {
	defer f.lockBranch(branch)()
	if f.Head(branch) == "" {
		message(w, http.StatusNotFound, "404 Branch Not Found")
		return
	}
	parents, err := run(f.bare, "rev-list", "--parents", "-n", "1", sha)
	if err != nil {
		message(w, http.StatusNotFound, "404 Commit Not Found")
		return
	}
	wt, base, cleanup, err := f.worktree(branch)
	if err != nil {
		message(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer cleanup()
	args := []string{"revert", "--no-edit"}
	if len(strings.Fields(parents)) > 2 {
		args = append(args, "-m", "1")
	}
	if _, err := run(wt, append(args, sha)...); err != nil {
		_, _ = run(wt, "revert", "--abort")
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Sorry, we cannot revert this commit automatically. This commit may already have been reverted, or a more recent commit may have updated some of its content.",
			"error_code": "conflict"})
		return
	}
	newSHA, err := f.advance(wt, branch, base)
	if err != nil {
		message(w, http.StatusBadRequest, "the branch moved; try again")
		return
	}
	title, _ := run(wt, "log", "-1", "--format=%s")
	writeJSON(w, http.StatusCreated, map[string]any{"id": newSHA, "short_id": newSHA[:8], "title": title, "message": title})
}

func (f *Fake) compare(w http.ResponseWriter, from, to string) {
	base, err := run(f.bare, "merge-base", from, to)
	if err != nil {
		message(w, http.StatusNotFound, "404 Ref Not Found")
		return
	}
	patch, _ := run(f.bare, "diff", "--no-color", base, to)
	log, _ := run(f.bare, "log", "--format=%H", base+".."+to)
	diffs := splitPatch(patch)
	sort.Slice(diffs, func(i, j int) bool { return diffs[i]["new_path"].(string) < diffs[j]["new_path"].(string) })
	var commits []map[string]any
	for _, sha := range strings.Fields(log) {
		commits = append(commits, map[string]any{"id": sha, "short_id": sha[:8]})
	}
	writeJSON(w, http.StatusOK, map[string]any{"commits": commits, "diffs": diffs, "compare_same_ref": from == to})
}

// splitPatch cuts a `git diff` into GitLab's per-file diff entries.
func splitPatch(patch string) []map[string]any {
	var out []map[string]any
	for _, part := range strings.Split(patch, "diff --git ")[1:] {
		header, body, _ := strings.Cut(part, "\n@@")
		fields := strings.Fields(strings.SplitN(header, "\n", 2)[0])
		path := strings.TrimPrefix(fields[len(fields)-1], "b/")
		out = append(out, map[string]any{"old_path": path, "new_path": path, "diff": "@@" + body + "\n",
			"new_file": strings.Contains(header, "new file mode"), "deleted_file": strings.Contains(header, "deleted file mode"), "renamed_file": false})
	}
	return out
}

func (f *Fake) rawFile(w http.ResponseWriter, path, ref string) {
	if ref == "" {
		ref = "main"
	}
	out, err := exec.Command("git", "-C", f.bare, "show", ref+":"+path).Output()
	if err != nil {
		message(w, http.StatusNotFound, "404 File Not Found")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(out)
}
