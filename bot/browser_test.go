package bot_test

import (
	"os"
	"strings"
	"testing"

	"opsbot/bot/bottest"
	"opsbot/bot/bottest/browsertest"
)

// The README's go-live, as four people do it in the local chat page in a
// real browser: alice's first look and her request typed in, bob's
// approval pressed on the card waiting for him, the bot restarted while
// dave types (the page says it is disconnected, keeps his command, comes
// back by itself, shows his waiting card again, runs the command once),
// carol's reject after the deploy with her reason (the deploy is rolled
// back), and a rollback that asks for confirmation in the page. With
// OPSBOT_SCREENSHOTS set, the main states are written there as PNGs
// (`make screenshots` writes docs/screenshots).
func TestLocalPageInBrowser(t *testing.T) {
	br := browsertest.Start(t)
	br.Shots = os.Getenv("OPSBOT_SCREENSHOTS")
	dir, clock := t.TempDir(), bottest.NewClock()
	k := bottest.Start(t, dir, clock)
	addr := strings.TrimPrefix(k.URL, "http://")
	open := func(query string) {
		t.Helper()
		br.Open(k.URL + "/?" + query)
		br.WaitJS("the page is connected", `document.querySelector("#status").dataset.state === "online"`)
	}

	// First look: something useful, not an empty page.
	open("as=alice")
	br.WaitText("#waiting", "nothing waits for you")
	br.WaitText("#waiting", "/ops new")
	br.Shot("01-first-look")
	// Team channels are in the picker.
	if got := br.Eval(`[...document.querySelectorAll("#where option")].map((o) => o.value).join(",")`); !strings.Contains(got, "#infra") {
		t.Fatalf("the view picker offers %q, want #infra among them", got)
	}
	// Oversized input is answered with the stated limit in the page, not a
	// browser alert, and stays in the input.
	br.Eval(`(() => { const i = document.querySelector("#text"); i.value = "/ops new golive service=" + "长".repeat(3000); i.dispatchEvent(new Event("input")); document.querySelector("#f").requestSubmit(); return "sent"; })()`)
	br.WaitText("#err", "at most 8000")
	if n := br.Eval(`String(document.querySelector("#text").value.length)`); n == "0" {
		t.Fatal("the oversized command was cleared from the input")
	}
	br.Eval(`(() => { const i = document.querySelector("#text"); i.value = ""; i.dispatchEvent(new Event("input")); return "cleared"; })()`)
	br.WaitJS("the error goes once the input is fine", `document.querySelector("#err").innerText === ""`)

	// alice requests, typing the README's line.
	br.Type("#text", `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`, true)
	br.WaitText("#log", "T-1")
	br.WaitText("#log", "Waiting for")
	if strings.Contains(br.Text("#log"), "Approve") {
		t.Fatalf("alice is offered Approve on her own ticket:\n%s", br.Text("#log"))
	}
	if v := br.Text("#err"); v != "" {
		t.Fatalf("an error is shown after a good command: %q", v)
	}
	br.Shot("02-requested")

	// bob finds the card waiting for him and presses Approve on it.
	open("as=bob")
	br.WaitText("#waiting", "waiting for you (1)")
	br.WaitText("#waiting", "T-1")
	br.Eval(`(() => { window.scrollTo(0, 0); return "top"; })()`)
	br.Shot("03-waiting-for-bob")
	br.ClickButton("#waiting", "Approve")
	k.WaitStage("T-1", "deploy_approval")

	// dave opens the page; the bot stops.
	open("as=dave")
	br.WaitText("#waiting", "T-1")
	k.Bot.Stop()
	br.WaitJS("the page says it is disconnected", `document.querySelector("#status").dataset.state === "offline" && document.querySelector("#banner").classList.contains("show")`)
	br.Type("#text", "/ops approve T-1", true)
	br.WaitText("#err", "not sent")
	if kept := br.Eval(`document.querySelector("#text").value`); kept != "/ops approve T-1" {
		t.Fatalf("a command typed while the bot is down was not kept in the input: %q", kept)
	}
	br.Shot("04-disconnected")

	// The bot starts again where it was; the page comes back by itself
	// and offers dave his waiting card again.
	k = bottest.Start(t, dir, clock, bottest.WithListen(addr))
	br.WaitJS("the page reconnects by itself", `document.querySelector("#status").dataset.state === "online" && !document.querySelector("#banner").classList.contains("show")`)
	br.WaitText("#waiting", "waiting for you (1)")
	br.WaitText("#waiting", "T-1")
	br.ClickButton("form", "Send")
	k.WaitStage("T-1", "verify")
	br.WaitText("#log", "/ops approve T-1")
	br.WaitJS("the input is cleared once sent", `document.querySelector("#text").value === "" && document.querySelector("#err").innerText === ""`)
	if runs := k.Runs(); len(runs) != 1 || !strings.HasPrefix(runs[0], "deploy") {
		t.Fatalf("the deploy ran %v, want once", runs)
	}
	typed := 0
	entries, _ := k.Bot.Local().Inbox("dave", 0)
	for _, e := range entries {
		if e.Kind == "you" && e.Text == "/ops approve T-1" {
			typed++
		}
	}
	if typed != 1 {
		t.Fatalf("dave's command is in his history %d times, want once", typed)
	}

	// alice's history survived the restart.
	open("as=alice")
	br.WaitText("#log", "/ops new golive service=payments")

	// carol rejects at production verification, giving her reason in the
	// page: the deploy is rolled back.
	open("as=carol")
	br.WaitText("#waiting", "T-1")
	br.ClickButton("#waiting", "Reject")
	br.WaitText("#waiting .ask", "Reason for rejecting")
	br.Type("#waiting .ask textarea", "checkout returns 500", false)
	br.Shot("05-reject-reason")
	br.ClickButton("#waiting .ask", "Reject")
	k.WaitStage("T-1", "rolled_back")
	if runs := k.Runs(); len(runs) != 2 || !strings.HasPrefix(runs[1], "rollback") {
		t.Fatalf("runs after the reject: %v, want the deploy then its rollback", runs)
	}
	k.Deliver()
	br.WaitText("#log", "checkout returns 500")
	br.WaitText("#log", "已回滚")

	// A second go-live is done; dave's Rollback asks first.
	k.Say("alice", `/ops new golive service=payments version=v1.4.3 rollback_app="redeploy v1.4.2" hotfix=true`)
	k.Say("bob", "/ops approve T-2")
	k.Say("dave", "/ops approve T-2")
	k.WaitStage("T-2", "verify")
	k.Say("carol", "/ops approve T-2 checkout works")
	k.WaitStage("T-2", "done")
	k.Deliver()
	open("as=dave")
	br.Type("#text", "/ops show T-2", true)
	br.WaitText("#log", "T-2")
	br.WaitJS("T-2's card offers Rollback", `[...document.querySelectorAll("#log .card[data-ticket='T-2'] button")].some((b) => b.innerText.includes("Rollback") && !b.disabled)`)
	pressLast := `(() => { const b = [...document.querySelectorAll("#log .card[data-ticket='T-2'] button")].filter((b) => b.innerText.includes("Rollback") && !b.disabled).pop(); b.click(); return "pressed"; })()`
	br.Eval(pressLast)
	br.WaitText("#log .ask", "⚠️")
	br.Shot("06-confirm-rollback")
	br.ClickButton("#log .ask", "Cancel")
	br.WaitJS("the confirmation is gone", `!document.querySelector("#log .ask")`)
	if st := k.Ticket("T-2").Stage; st != "done" {
		t.Fatalf("cancelling the confirmation changed the ticket: %s", st)
	}
	br.Eval(pressLast)
	br.ClickButton("#log .ask", "Confirm")
	k.WaitStage("T-2", "rolled_back")
	k.Deliver()
	br.WaitText("#log", "已回滚")
	br.Shot("07-rolled-back")

	// A 5,000-character value without spaces wraps inside its card: neither
	// the card nor the page gets wider than the window.
	br.Eval(`(() => { const i = document.querySelector("#text"); i.value = '/ops new golive service=payments version=v1.4.4 rollback_app="redeploy v1.4.3" hotfix=true impact=' + "x".repeat(5000); i.dispatchEvent(new Event("input")); document.querySelector("#f").requestSubmit(); return "sent"; })()`)
	br.WaitText("#log", "T-3")
	if wide := br.Eval(`(() => { const c = [...document.querySelectorAll("#log .card[data-ticket='T-3']")].pop(); return c.scrollWidth > c.clientWidth + 1 || document.documentElement.scrollWidth > window.innerWidth ? "wider: card " + c.scrollWidth + "/" + c.clientWidth + ", page " + document.documentElement.scrollWidth + "/" + window.innerWidth : ""; })()`); wide != "" {
		t.Fatalf("a long value widens the card: %s", wide)
	}
}
