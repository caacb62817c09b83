package puppet_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"opsbot/flows"
	"opsbot/integrations/gitlab"
	"opsbot/integrations/gitlab/gitlabfake"
	"opsbot/integrations/puppet"
	"opsbot/state"
)

func TestCheckPuppetfile(t *testing.T) {
	body := `forge 'https://forge.puppet.com'
mod 'puppetlabs/stdlib', '9.0.0'
mod 'ntp',
  :git => 'https://git.example/ntp.git',
  :commit => '0123456789abcdef0123456789abcdef01234567'
mod 'chrony', :git => 'https://git.example/chrony.git', :tag => 'v1.2.0'
mod 'bad', :git => 'https://git.example/bad.git', :commit => 'abc123'
mod 'loose', :git => 'https://git.example/loose.git'
mood 'typo'
`
	got := puppet.CheckPuppetfile(body)
	want := []string{`line 7: mod bad: :commit "abc123" is not a 40-hex sha`, `line 8: mod loose: a :git module needs :commit, :tag or :branch`,
		`line 9: not a mod entry: "mood 'typo'"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkRelease40Zones releases 40 zone branches in 4 batches against
// the fake with 100 ms injected latency per API call, and reports the
// total time next to the critical path (the calls that must run in
// sequence: 4 per merge step) as a ratio.
func BenchmarkRelease40Zones(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fake := gitlabfake.New(b)
		fake.Commit("main", "base", map[string]string{"manifests/site.pp": "node default {}\n"})
		var batches []string
		for z := 0; z < 40; z++ {
			fake.Branch(fmt.Sprintf("zone%02d", z+1), "main")
		}
		for bt := 0; bt < 4; bt++ {
			var zs []string
			for z := bt * 10; z < bt*10+10; z++ {
				zs = append(zs, fmt.Sprintf("zone%02d", z+1))
			}
			batches = append(batches, strings.Join(zs, ","))
		}
		fake.Branch("uat", "main")
		fake.Branch("production", "main")
		fake.Branch("release/x", "uat")
		fake.Commit("release/x", "x", map[string]string{"manifests/x.pp": "class x {}\n"})
		c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
		ex := puppet.New(puppet.Config{Client: c, MaxConcurrent: 10})
		st := &flows.Stage{Kind: flows.KindRelease}
		parsed, err := flows.ParseBatches(st, strings.Join(batches, ";"))
		if err != nil {
			b.Fatal(err)
		}
		tk := state.Ticket{ID: "T-1", Title: "bench", Fields: map[string]string{"branch": "release/x"}, Batches: parsed}
		const latency = 100 * time.Millisecond
		fake.SetLatency(latency)
		b.StartTimer()
		start := time.Now()
		for n := range tk.Batches {
			res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "release", Params: map[string]string{"batch": fmt.Sprint(n)}})
			if !res.OK {
				b.Fatalf("batch %d: %s", n+1, res.Err)
			}
			tk.Batches[n] = *res.Batch
		}
		total := time.Since(start)
		b.StopTimer()
		// Critical path: batch 1 checks (2 calls) and merges uat and
		// production in turn, then one zone's merge; later batches one
		// zone's merge each (zones run side by side). 4 calls per merge.
		critical := time.Duration(2+4*3+4*3) * latency
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(critical.Seconds(), "critical-s")
		b.ReportMetric(total.Seconds()/critical.Seconds(), "ratio")
	}
}

// TestRevertResumesWithoutRevertingTwice: a rollback cut short after some
// reverts (the bot restarted) runs again and skips what was reverted.
func TestRevertResumesWithoutRevertingTwice(t *testing.T) {
	fake, c, ex, tk := oneZoneRelease(t)
	res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "release", Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	b := *res.Batch
	// Before the restart the rollback had reverted the zone (its first step).
	zoneStep := b.Steps[2]
	if _, err := c.Revert(context.Background(), zoneStep.MergeSHA, "zone01"); err != nil {
		t.Fatal(err)
	}
	tk.Batches[0] = b
	res = ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "revert", Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatalf("resumed rollback: %s", res.Err)
	}
	reverts := 0
	for _, call := range fake.Calls() {
		if strings.HasSuffix(call, "/revert") {
			reverts++
		}
	}
	if reverts != 3 { // zone01 once (before), production and uat now
		t.Fatalf("%d revert calls, want 3", reverts)
	}
	for _, br := range []string{"uat", "production", "zone01"} {
		if fake.Read(br, "manifests/x.pp") != "" {
			t.Errorf("%s still has the change", br)
		}
	}
}

// TestReleaseRegistersItsMergesAndRevertUsesThem: a release registers one
// undo step per merge, in the order made; the revert reverses exactly
// the steps it is handed, newest first, and nothing else.
func TestReleaseRegistersItsMergesAndRevertUsesThem(t *testing.T) {
	fake, _, ex, tk := oneZoneRelease(t)
	res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: state.JobRelease, Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	var targets []string
	for _, u := range res.Undo {
		targets = append(targets, u.Values["target"])
		if u.Values["merge_sha"] == "" {
			t.Fatalf("undo step without the merge: %+v", u)
		}
	}
	if strings.Join(targets, ",") != "uat,production,zone01" {
		t.Fatalf("registered %v, want the merges in order", targets)
	}
	tk.Batches[0] = *res.Batch
	// Handed only the zone's step (as a saga whose other entries were
	// undone), the revert touches the zone alone.
	res = ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: state.JobRevert, Params: map[string]string{"batch": "0"},
		Undo: []state.UndoStep{res.Undo[2]}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	if fake.Read("zone01", "manifests/x.pp") != "" || fake.Read("production", "manifests/x.pp") == "" {
		t.Fatal("the revert did not follow its undo steps")
	}
}

// oneZoneRelease is a release of branch release/x (one new file) in one
// batch: uat, production, then zone01.
func oneZoneRelease(t *testing.T) (*gitlabfake.Fake, *gitlab.Client, *puppet.Executor, state.Ticket) {
	t.Helper()
	fake := gitlabfake.New(t)
	fake.Commit("main", "base", map[string]string{"manifests/site.pp": "node default {}\n"})
	for _, b := range []string{"uat", "production", "zone01"} {
		fake.Branch(b, "main")
	}
	fake.Branch("release/x", "uat")
	fake.Commit("release/x", "x", map[string]string{"manifests/x.pp": "class x {}\n"})
	c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	ex := puppet.New(puppet.Config{Client: c})
	parsed, _ := flows.ParseBatches(&flows.Stage{Kind: flows.KindRelease}, "zone01")
	tk := state.Ticket{ID: "T-1", Title: "x", Fields: map[string]string{"branch": "release/x"}, Batches: parsed}
	return fake, c, ex, tk
}
