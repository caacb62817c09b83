package bot_test

import (
	"fmt"
	"strings"
	"testing"

	"opsbot/bot/bottest"
	"opsbot/bot/slack/slackfake"
	"opsbot/bot/wecom/wecomfake"
	"opsbot/state"
)

// TestCapacityWarningReachesTeamChannels: the infra channel is a Slack
// channel, a WeCom group robot and the local "#infra" inbox; a cluster
// crossing 80% warns each of them once.
func TestCapacityWarningReachesTeamChannels(t *testing.T) {
	sf, wf := teamFakes(t, "infra")
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q}\n%s\n%s", sf.APIURL(), wecomYAML(wf),
		"channels: {infra: {slack: C0INFRA, wecom_robot_env: OPSBOT_WECOM_ROBOT_INFRA}}")))
	var ss []state.StoreInfo
	for i := 1; i <= 7; i++ {
		ss = append(ss, uatStore(fmt.Sprintf("A%d", i), "uat-a"))
	}
	ss = append(ss, uatStore("B1", ""), uatStore("B2", ""))
	if err := k.Bot.Inventory().Put(t.Context(), []state.Cluster{{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Capacity: 10, Status: "active"}}, ss); err != nil {
		t.Fatal(err)
	}
	for i, store := range []string{"B1", "B2"} { // 7 → 8 (crosses 80%) → 9
		id := fmt.Sprintf("T-%d", i+1)
		mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change cluster=uat-a reason=x stores="+store)), id+" submitted")
		approve(t, k, "ivan", id, "executing")
		k.WaitStage(id, "done")
	}
	want := "cluster uat-a utilization crossed 80%: 8/10 stores"
	msgs := waitMessages(t, k, sf, "C0INFRA", 1)
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, want) {
		t.Fatalf("slack #infra: %+v", msgs)
	}
	posts := wf.RobotPosts("robot-infra-key")
	if len(posts) != 1 || !strings.Contains(posts[0], want) {
		t.Fatalf("wecom robot: %q", posts)
	}
	if box := k.Inbox("#infra"); len(box) != 1 || !strings.Contains(box[0].Msg.Title, want) {
		t.Fatalf("local #infra: %+v", box)
	}
	if got := wf.RobotPosts("robot-golive-key"); len(got) != 0 {
		t.Fatalf("the golive robot got the infra warning: %q", got)
	}
}

// teamFakes starts a Slack and a WeCom fake for a bot with team channels:
// each channel's group robot key is robot-NAME-key, in the environment
// variable OPSBOT_WECOM_ROBOT_NAME.
func teamFakes(t *testing.T, channels ...string) (*slackfake.Server, *wecomfake.Fake) {
	t.Helper()
	sf := slackfake.New(t)
	t.Setenv("OPSBOT_SLACK_BOT_TOKEN", sf.BotToken)
	t.Setenv("OPSBOT_SLACK_SIGNING_SECRET", signingSecret)
	wf := newWeComFake(t)
	for _, c := range channels {
		t.Setenv("OPSBOT_WECOM_ROBOT_"+strings.ToUpper(c), "robot-"+c+"-key")
		wf.AddRobot("robot-" + c + "-key")
	}
	return sf, wf
}
