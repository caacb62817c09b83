package gitlab_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"opsbot/integrations/gitlab"
	"opsbot/integrations/gitlab/gitlabfake"
)

func setup(t *testing.T) (*gitlabfake.Fake, *gitlab.Client) {
	t.Helper()
	fake := gitlabfake.New(t)
	fake.Commit("main", "site", map[string]string{"manifests/site.pp": "node default {}\n", "Puppetfile": "mod 'stdlib'\n"})
	for _, b := range []string{"uat", "production", "zone01", "zone02"} {
		fake.Branch(b, "main")
	}
	c, err := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c
}

func TestMergeRequestsAreIdempotent(t *testing.T) {
	fake, c := setup(t)
	ctx := context.Background()
	if err := c.CreateBranch(ctx, "release/ntp", "uat"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateBranch(ctx, "release/ntp", "uat"); err != nil {
		t.Fatalf("second create: %v", err)
	}
	fake.Commit("release/ntp", "ntp servers", map[string]string{"manifests/site.pp": "node default { include ntp }\n"})
	a, err := c.EnsureMR(ctx, "release/ntp", "uat", "NTP rollout")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.EnsureMR(ctx, "release/ntp", "uat", "NTP rollout")
	if err != nil || b.IID != a.IID || len(fake.MRs()) != 1 {
		t.Fatalf("second ensure made another MR: %+v %v (%d MRs)", b, err, len(fake.MRs()))
	}
	m, err := c.Merge(ctx, a.IID)
	if err != nil || m.State != "merged" || m.MergeCommitSHA == "" {
		t.Fatalf("merge: %+v %v", m, err)
	}
	head := fake.Head("uat")
	again, err := c.Merge(ctx, a.IID)
	if err != nil || again.MergeCommitSHA != m.MergeCommitSHA || fake.Head("uat") != head {
		t.Fatalf("merging twice changed uat: %+v %v", again, err)
	}
	if got := fake.Read("uat", "manifests/site.pp"); !strings.Contains(got, "include ntp") {
		t.Fatalf("uat has %q", got)
	}
	// After the merge there is nothing open; Find returns the merged one.
	f, err := c.FindMR(ctx, "release/ntp", "uat")
	if err != nil || f.State != "merged" {
		t.Fatalf("find: %+v %v", f, err)
	}
	diffs, err := c.Compare(ctx, "main", "uat")
	if err != nil || len(diffs) != 1 || diffs[0].Path != "manifests/site.pp" || !strings.Contains(diffs[0].Patch, "+node default { include ntp }") {
		t.Fatalf("compare: %+v %v", diffs, err)
	}
	if body, err := c.File(ctx, "Puppetfile", "uat"); err != nil || string(body) != "mod 'stdlib'\n" {
		t.Fatalf("file: %q %v", body, err)
	}
	if err := c.DeleteBranch(ctx, "release/ntp"); err != nil || fake.Head("release/ntp") != "" {
		t.Fatalf("delete: %v", err)
	}
	if err := c.DeleteBranch(ctx, "release/ntp"); err != nil {
		t.Fatalf("deleting a missing branch: %v", err)
	}
}

func TestConflictNamesTheFilesAndChangesNothing(t *testing.T) {
	fake, c := setup(t)
	ctx := context.Background()
	fake.Commit("uat", "uat tweak", map[string]string{"manifests/site.pp": "node default { include ntp }\n"})
	fake.Commit("production", "hotfix on production", map[string]string{"manifests/site.pp": "node default { include chrony }\n"})
	before := fake.Head("production")
	mr, err := c.EnsureMR(ctx, "uat", "production", "promote")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Merge(ctx, mr.IID)
	var ce *gitlab.ConflictError
	if !errors.As(err, &ce) || len(ce.Files) != 1 || ce.Files[0] != "manifests/site.pp" {
		t.Fatalf("err %v", err)
	}
	if fake.Head("production") != before {
		t.Fatal("a conflicting merge moved production")
	}
}

func TestRevertRestoresAndASecondRevertFails(t *testing.T) {
	fake, c := setup(t)
	ctx := context.Background()
	c.CreateBranch(ctx, "release/x", "uat")
	fake.Commit("release/x", "x", map[string]string{"manifests/x.pp": "class x {}\n"})
	mr, _ := c.EnsureMR(ctx, "release/x", "uat", "x")
	m, err := c.Merge(ctx, mr.IID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revert(ctx, m.MergeCommitSHA, "uat"); err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got := fake.Read("uat", "manifests/x.pp"); got != "" {
		t.Fatalf("reverted file still there: %q", got)
	}
	// Someone changed the file after the revert: reverting the revert's
	// target again cannot apply and names the file.
	fake.Commit("uat", "edit", map[string]string{"manifests/x.pp": "class x { notify {'hi':} }\n"})
	_, err = c.Revert(ctx, m.MergeCommitSHA, "uat")
	var ce *gitlab.ConflictError
	if !errors.As(err, &ce) || len(ce.Files) == 0 || ce.Files[0] != "manifests/x.pp" {
		t.Fatalf("second revert: %v", err)
	}
}

func TestAuthAndInjectedFailures(t *testing.T) {
	fake, _ := setup(t)
	ctx := context.Background()
	bad, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: "wrong", Project: gitlabfake.Project})
	if _, err := bad.Head(ctx, "uat"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	// A 502 is retried by the client (client-go retries server errors).
	fake.FailNext(1, 502)
	before := len(fake.Calls())
	if head, err := c.Head(ctx, "uat"); err != nil || head == "" {
		t.Fatalf("after a 502: %q %v", head, err)
	}
	if n := len(fake.Calls()) - before; n != 2 {
		t.Fatalf("%d calls for one read with one 502, want 2", n)
	}
	if head, err := c.Head(ctx, "no-such-branch"); err != nil || head != "" {
		t.Fatalf("missing branch: %q %v", head, err)
	}
}
