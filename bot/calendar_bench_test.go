package bot_test

import (
	"fmt"
	"testing"

	"opsbot/bot/bottest"
)

// BenchmarkCalendarCost is the price of a full calendar on the approval
// path: every person's action reads the calendar (freezes decide), and an
// approval stage entered routes its notice through absences and duty.
// One bot holds 40 freezes that do not cover the go-lives approved (one
// weekly), 20 milestones, 2 people away and a duty rotation on ops (the
// stage the approvals enter); two bots have an empty calendar, the second
// measuring this machine's noise. Run with -benchtime 1x.
func BenchmarkCalendarCost(b *testing.B) {
	const rounds, per = 12, 300
	state := shmState(b)
	kits := []*bottest.Kit{bottest.New(b, state("full")), bottest.New(b, state("empty")), bottest.New(b, state("empty2"))}
	full := kits[0]
	say := func(user, cmd string) {
		if msgs := full.Say(user, cmd); len(msgs) == 0 || msgs[0].Level != "success" {
			b.Fatalf("%s: %+v", cmd, msgs)
		}
	}
	for i := 0; i < 39; i++ {
		say("root", fmt.Sprintf(`/ops freeze env=tdev%d flows=golive,server-change until=2026-06-%02d reason="freeze %d"`, i, 1+i%28, i))
	}
	say("root", `/ops freeze env=uat every="fri 18:00-mon 09:00" reason=weekend`)
	for i := 0; i < 20; i++ {
		say("root", fmt.Sprintf(`/ops milestone add 6.%d date=2026-06-%02d name="m%d" kind=package`, i, 1+i, i))
	}
	say("root", "/ops role grant ops ivan")
	say("root", "/ops role grant techlead carol")
	say("bert", "/ops away until=2026-06-01 delegate=carol")
	say("cathy", "/ops away until=2026-06-01 delegate=carol")
	say("dave", "/ops duty set ops dave,ivan weekly")
	r := compareApprovals(b, kits, rounds, per)
	b.ReportMetric(r.rate[0], "approvals/s-full-calendar")
	b.ReportMetric(r.rate[1], "approvals/s-empty-calendar")
	b.ReportMetric(r.cost, "%-slower-full(median)")
	b.ReportMetric(r.floor, "%-apart-identical-bots(median)")
	b.Logf("approvals/s through the local API, 32 clients, %d rounds of %d: full calendar %.0f, empty %.0f, empty again %.0f on average; "+
		"the full calendar slower by a median %.1f%% (rounds from %.1f%% to %.1f%%); two identical bots %.1f%% apart (from %.1f%% to %.1f%%)",
		rounds, per, r.rate[0], r.rate[1], r.rate[2], r.cost, r.costMin, r.costMax, r.floor, r.floorMin, r.floorMax)
}
