package flows_test

import (
	"strings"
	"testing"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

var utc = time.UTC

func at(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04", s, utc)
	if err != nil {
		panic(err)
	}
	return t
}

// TestFreezeWindows: a one-off window holds from its start to its end; a
// weekly one that wraps the week's end holds on Saturday, not on Monday
// after its end, and says when the holding ends.
func TestFreezeWindows(t *testing.T) {
	once := state.Freeze{From: at("2026-05-09 12:00"), Until: at("2026-05-12 09:00"), TZ: "UTC"}
	for now, want := range map[string]bool{"2026-05-09 11:59": false, "2026-05-09 12:00": true, "2026-05-12 08:59": true, "2026-05-12 09:00": false} {
		if _, ok := flows.FreezeHolds(once, at(now)); ok != want {
			t.Errorf("once at %s: holds %v, want %v", now, ok, want)
		}
	}
	w, err := flows.ParseWeekly("fri 18:00-mon 09:00")
	if err != nil {
		t.Fatal(err)
	}
	weekend := state.Freeze{Weekly: w, TZ: "UTC"}
	// 2026-05-09 is a Saturday.
	end, ok := flows.FreezeHolds(weekend, at("2026-05-09 10:00"))
	if !ok || !end.Equal(at("2026-05-11 09:00")) {
		t.Fatalf("Saturday: %v until %s", ok, end)
	}
	if _, ok := flows.FreezeHolds(weekend, at("2026-05-11 10:00")); ok {
		t.Fatal("Monday 10:00 is frozen")
	}
	if _, ok := flows.FreezeHolds(weekend, at("2026-05-08 17:59")); ok {
		t.Fatal("Friday 17:59 is frozen")
	}
	start, end, ok := flows.FreezeNext(weekend, at("2026-05-11 10:00"))
	if !ok || !start.Equal(at("2026-05-15 18:00")) || !end.Equal(at("2026-05-18 09:00")) {
		t.Fatalf("next weekend %s → %s (%v)", start, end, ok)
	}
	// In its own zone: Friday 18:00 in Shanghai is 10:00 UTC.
	cst := state.Freeze{Weekly: w, TZ: "Asia/Shanghai"}
	if _, ok := flows.FreezeHolds(cst, at("2026-05-08 10:00")); !ok {
		t.Fatal("Friday 18:00 CST is not frozen")
	}
	if got := flows.WeeklyText(w); got != "fri 18:00-mon 09:00" {
		t.Fatalf("written back as %q", got)
	}
	for _, bad := range []string{"", "fri 18:00", "fri 18:00-fri 18:00", "someday 10:00-mon 09:00", "fri 25:00-mon 09:00"} {
		if _, err := flows.ParseWeekly(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestFreezeCovers: environments (a field or the flow's own), flows and
// resources (a field or a lock).
func TestFreezeCovers(t *testing.T) {
	golive := &flows.Flow{Name: "golive", Env: "prod", Locks: []string{"service:{service}"}}
	fields := map[string]string{"service": "payments"}
	locks := []string{"service:payments"}
	for _, c := range []struct {
		fz   state.Freeze
		want bool
	}{
		{state.Freeze{Envs: []string{"prod"}}, true},
		{state.Freeze{Envs: []string{"tdev"}}, false},
		{state.Freeze{Flows: []string{"golive"}}, true},
		{state.Freeze{Envs: []string{"prod"}, Flows: []string{"cleanup"}}, false},
		{state.Freeze{Resources: []string{"service:payments"}}, true},
		{state.Freeze{Resources: []string{"service:search"}}, false},
		{state.Freeze{Resources: []string{"platform:ios"}}, false},
	} {
		if got := flows.FreezeCovers(c.fz, golive, fields, locks); got != c.want {
			t.Errorf("%+v covers golive: %v, want %v", c.fz, got, c.want)
		}
	}
	if !flows.FreezeCovers(state.Freeze{Envs: []string{"tdev"}}, golive, map[string]string{"env": "tdev"}, nil) {
		t.Error("the env field does not win over the flow's env")
	}
}

// FuzzParseWeekly: whatever people type either is refused with an
// example or parses into a window that is written back as it reads and
// whose holding ends within the week.
func FuzzParseWeekly(f *testing.F) {
	for _, s := range []string{"fri 18:00-mon 09:00", "周五 18:00-周一 09:00", "sat 00:00-sun 23:59", "mon 9:00-mon 08:00", "- ", "fri-mon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := flows.ParseWeekly(s)
		if err != nil {
			if !strings.Contains(err.Error(), "fri 18:00-mon 09:00") {
				t.Fatalf("the error shows no example: %v", err)
			}
			return
		}
		again, err := flows.ParseWeekly(flows.WeeklyText(w))
		if err != nil || *again != *w {
			t.Fatalf("%q written back as %q reads %+v, %v", s, flows.WeeklyText(w), again, err)
		}
		fz := state.Freeze{Weekly: w, TZ: "UTC"}
		for h := 0; h < 7*24; h++ {
			now := at("2026-05-10 00:00").Add(time.Duration(h) * time.Hour)
			if end, ok := flows.FreezeHolds(fz, now); ok && (!end.After(now) || end.After(now.Add(7*24*time.Hour))) {
				t.Fatalf("%q at %s holds until %s", s, now, end)
			}
		}
	})
}
