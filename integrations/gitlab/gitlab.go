// Package gitlab is opsbot's GitLab client, on the maintained
// gitlab.com/gitlab-org/api/client-go: branches, merge requests created
// and merged idempotently (an existing merge request for the same source
// and target is reused; an already merged one is not merged again),
// reverts of merge commits, compares and raw files. Conflicts and failed
// reverts come back as typed errors naming the files involved.
package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// Config connects to a GitLab project.
type Config struct {
	// BaseURL is the API root, e.g. https://gitlab.example.com/api/v4.
	BaseURL string
	// Token is a private token with the api scope (from the environment).
	Token   string
	Project string
	// HTTPClient overrides the HTTP client (timeouts, proxies).
	HTTPClient *http.Client
}

// Client talks to one project.
type Client struct {
	api     *gl.Client
	project string
}

// New returns a client; it does not call GitLab.
func New(cfg Config) (*Client, error) {
	opts := []gl.ClientOptionFunc{gl.WithBaseURL(cfg.BaseURL)}
	if cfg.HTTPClient != nil {
		opts = append(opts, gl.WithHTTPClient(cfg.HTTPClient))
	}
	api, err := gl.NewClient(cfg.Token, opts...)
	if err != nil {
		return nil, fmt.Errorf("gitlab client: %w", err)
	}
	return &Client{api: api, project: cfg.Project}, nil
}

// MR is a merge request.
type MR struct {
	IID            int64
	Source, Target string
	State          string // opened, merged, closed
	MergeCommitSHA string
	WebURL         string
}

func toMR(m *gl.BasicMergeRequest) MR {
	return MR{IID: m.IID, Source: m.SourceBranch, Target: m.TargetBranch, State: m.State, MergeCommitSHA: m.MergeCommitSHA, WebURL: m.WebURL}
}

// ConflictError says a merge or revert cannot be done automatically; Files
// are the files changed on both sides (or by the reverted commit).
type ConflictError struct {
	Op    string
	Files []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s has conflicts in %v", e.Op, e.Files)
}

func status(resp *gl.Response) int {
	if resp == nil || resp.Response == nil {
		return 0
	}
	return resp.StatusCode
}

// Head returns a branch's commit, or "" when the branch does not exist.
func (c *Client) Head(ctx context.Context, branch string) (string, error) {
	b, resp, err := c.api.Branches.GetBranch(c.project, branch, gl.WithContext(ctx))
	if status(resp) == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get branch %s: %w", branch, err)
	}
	return b.Commit.ID, nil
}

// CreateBranch creates branch at ref; an existing branch is left as it is.
func (c *Client) CreateBranch(ctx context.Context, branch, ref string) error {
	if head, err := c.Head(ctx, branch); err != nil || head != "" {
		return err
	}
	_, resp, err := c.api.Branches.CreateBranch(c.project, &gl.CreateBranchOptions{Branch: &branch, Ref: &ref}, gl.WithContext(ctx))
	if err != nil && status(resp) == http.StatusBadRequest {
		if head, herr := c.Head(ctx, branch); herr == nil && head != "" {
			return nil // created meanwhile
		}
	}
	if err != nil {
		return fmt.Errorf("create branch %s from %s: %w", branch, ref, err)
	}
	return nil
}

// DeleteBranch deletes a branch; a missing branch is not an error.
func (c *Client) DeleteBranch(ctx context.Context, branch string) error {
	resp, err := c.api.Branches.DeleteBranch(c.project, branch, gl.WithContext(ctx))
	if status(resp) == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete branch %s: %w", branch, err)
	}
	return nil
}

// FindMR returns the newest open or merged merge request from source to
// target, if any.
func (c *Client) FindMR(ctx context.Context, source, target string) (*MR, error) {
	state := "all"
	mrs, _, err := c.api.MergeRequests.ListProjectMergeRequests(c.project, &gl.ListProjectMergeRequestsOptions{
		SourceBranch: &source, TargetBranch: &target, State: &state}, gl.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list merge requests %s -> %s: %w", source, target, err)
	}
	for _, m := range mrs {
		if m.State == "opened" || m.State == "merged" {
			mr := toMR(m)
			return &mr, nil
		}
	}
	return nil, nil
}

// EnsureMR returns the open merge request from source to target, creating
// it when there is none. A merged one is returned only when it is newer
// than the source branch's head (nothing left to merge).
func (c *Client) EnsureMR(ctx context.Context, source, target, title string) (*MR, error) {
	if m, err := c.FindMR(ctx, source, target); err != nil || (m != nil && m.State == "opened") {
		return m, err
	}
	m, resp, err := c.api.MergeRequests.CreateMergeRequest(c.project, &gl.CreateMergeRequestOptions{
		SourceBranch: &source, TargetBranch: &target, Title: &title}, gl.WithContext(ctx))
	if status(resp) == http.StatusConflict {
		return c.FindMR(ctx, source, target) // created meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("create merge request %s -> %s: %w", source, target, err)
	}
	mr := toMR(&m.BasicMergeRequest)
	return &mr, nil
}

// Merge merges a merge request; one already merged is returned as it is.
// A conflict returns *ConflictError with the files changed on both sides.
func (c *Client) Merge(ctx context.Context, iid int64) (*MR, error) {
	m, resp, err := c.api.MergeRequests.AcceptMergeRequest(c.project, iid, &gl.AcceptMergeRequestOptions{}, gl.WithContext(ctx))
	switch status(resp) {
	case http.StatusOK:
		mr := toMR(&m.BasicMergeRequest)
		return &mr, nil
	case http.StatusMethodNotAllowed:
		cur, _, gerr := c.api.MergeRequests.GetMergeRequest(c.project, iid, nil, gl.WithContext(ctx))
		if gerr == nil && cur.State == "merged" {
			mr := toMR(&cur.BasicMergeRequest)
			return &mr, nil
		}
	case http.StatusNotAcceptable, http.StatusConflict:
		cur, _, gerr := c.api.MergeRequests.GetMergeRequest(c.project, iid, nil, gl.WithContext(ctx))
		if gerr != nil {
			return nil, fmt.Errorf("merge !%d: %w", iid, err)
		}
		files, ferr := c.bothChanged(ctx, cur.SourceBranch, cur.TargetBranch)
		if ferr != nil {
			return nil, ferr
		}
		return nil, &ConflictError{Op: fmt.Sprintf("merge %s into %s", cur.SourceBranch, cur.TargetBranch), Files: files}
	}
	return nil, fmt.Errorf("merge !%d: %w", iid, err)
}

// bothChanged lists files changed on both branches since they parted.
func (c *Client) bothChanged(ctx context.Context, a, b string) ([]string, error) {
	fa, err := c.Changed(ctx, b, a)
	if err != nil {
		return nil, err
	}
	fb, err := c.Changed(ctx, a, b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range fa {
		if slices.Contains(fb, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// FileDiff is one file of a compare.
type FileDiff struct {
	Path    string
	New     bool
	Deleted bool
	Patch   string
}

// Compare returns what to has that from does not (since their merge base).
func (c *Client) Compare(ctx context.Context, from, to string) ([]FileDiff, error) {
	cmp, _, err := c.api.Repositories.Compare(c.project, &gl.CompareOptions{From: &from, To: &to}, gl.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("compare %s...%s: %w", from, to, err)
	}
	var out []FileDiff
	for _, d := range cmp.Diffs {
		out = append(out, FileDiff{Path: d.NewPath, New: d.NewFile, Deleted: d.DeletedFile, Patch: d.Diff})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Changed lists the files Compare reports.
func (c *Client) Changed(ctx context.Context, from, to string) ([]string, error) {
	diffs, err := c.Compare(ctx, from, to)
	var out []string
	for _, d := range diffs {
		out = append(out, d.Path)
	}
	return out, err
}

// Revert reverts a (merge) commit onto branch and returns the new commit.
// When GitLab cannot do it automatically it returns *ConflictError naming
// the files the reverted commit touched.
func (c *Client) Revert(ctx context.Context, sha, branch string) (string, error) {
	commit, resp, err := c.api.Commits.RevertCommit(c.project, sha, &gl.RevertCommitOptions{Branch: &branch}, gl.WithContext(ctx))
	if err == nil {
		return commit.ID, nil
	}
	if status(resp) == http.StatusBadRequest {
		files, ferr := c.Changed(ctx, sha+"^1", sha)
		if ferr != nil {
			return "", errors.Join(err, ferr)
		}
		return "", &ConflictError{Op: fmt.Sprintf("revert %.8s on %s", sha, branch), Files: files}
	}
	return "", fmt.Errorf("revert %.8s on %s: %w", sha, branch, err)
}

// File reads a file at ref.
func (c *Client) File(ctx context.Context, path, ref string) ([]byte, error) {
	b, _, err := c.api.RepositoryFiles.GetRawFile(c.project, path, &gl.GetRawFileOptions{Ref: &ref}, gl.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read %s at %s: %w", path, ref, err)
	}
	return b, nil
}

// Ahead counts the commits to has that from does not: 0 means from
// already contains to, so merging to into from has nothing to do.
func (c *Client) Ahead(ctx context.Context, from, to string) (int, error) {
	cmp, _, err := c.api.Repositories.Compare(c.project, &gl.CompareOptions{From: &from, To: &to}, gl.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("compare %s...%s: %w", from, to, err)
	}
	return len(cmp.Commits), nil
}
