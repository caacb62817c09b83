package slack

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/slack-go/slack"
)

// TestRecordedClickKeepsWhatHandlingReads: the compact record of a click
// or a reject reason gives back what the handling reads, and is a small
// fraction of Slack's payload (which carries the whole message).
func TestRecordedClickKeepsWhatHandlingReads(t *testing.T) {
	click := slack.InteractionCallback{Type: slack.InteractionTypeBlockActions, TriggerID: "trig-1", ResponseURL: "https://hooks.slack.com/r/1",
		User: slack.User{ID: "U0BOB", Name: "bob"}, ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{
			{ActionID: "opsbot_0", Value: "/ops approve T-1#3", ActionTs: "1700000000.1"}}},
		Message: slack.Message{Msg: slack.Msg{Text: string(make([]byte, 4000))}}}
	full, _ := json.Marshal(click)
	rec, _ := json.Marshal(recordOf(click))
	if len(rec)*10 > len(full) {
		t.Fatalf("record %d bytes for a %d-byte payload", len(rec), len(full))
	}
	var back recorded
	if err := json.Unmarshal(rec, &back); err != nil {
		t.Fatal(err)
	}
	cb := back.callback()
	a := cb.ActionCallback.BlockActions[0]
	if cb.Type != click.Type || cb.User.ID != "U0BOB" || cb.User.Name != "bob" || cb.TriggerID != "trig-1" || cb.ResponseURL != click.ResponseURL ||
		a.Value != "/ops approve T-1#3" || a.ActionTs != "1700000000.1" {
		t.Fatalf("rebuilt %+v %+v", cb, a)
	}
	reason := slack.InteractionCallback{Type: slack.InteractionTypeViewSubmission, User: slack.User{ID: "U0BOB"},
		View: slack.View{ID: "V1", CallbackID: "reject", PrivateMetadata: "/ops reject T-1#3\\nhttps://hooks.slack.com/r/1",
			State: &slack.ViewState{Values: map[string]map[string]slack.BlockAction{"reason": {"value": {Value: "too risky"}}}}}}
	rec, _ = json.Marshal(recordOf(reason))
	_ = json.Unmarshal(rec, &back)
	cb = back.callback()
	if cb.View.ID != "V1" || cb.View.CallbackID != "reject" || cb.View.PrivateMetadata != reason.View.PrivateMetadata ||
		!reflect.DeepEqual(cb.View.State.Values, reason.View.State.Values) {
		t.Fatalf("rebuilt view %+v", cb.View)
	}
}
