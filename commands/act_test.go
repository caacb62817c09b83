package commands_test

import (
	"reflect"
	"strings"
	"testing"

	"opsbot/commands"
	"opsbot/flows"
)

func TestEncodeIsTheInverseOfParse(t *testing.T) {
	r := commands.Default()
	cases := []struct {
		act  commands.Act
		want string
	}{
		{commands.Act{Event: flows.EvApprove, Ticket: "T-42", Version: 7}, "/ops approve T-42#7"},
		{commands.Act{Event: flows.EvRelease, Ticket: "T-3", Version: 5, Batch: 2}, "/ops release T-3#5 batch=2"},
		{commands.Act{Event: flows.EvRollback, Ticket: "T-3", Batch: 1}, "/ops rollback T-3 batch=1"},
		{commands.Act{Event: flows.EvRollback, Ticket: "T-3", Version: 4, Confirm: true}, "/ops rollback T-3#4 confirm"},
		{commands.Act{Event: flows.EvReject, Ticket: "T-9", Comment: `checkout "500" \ sale`}, `/ops reject T-9 "checkout \"500\" \\ sale"`},
		{commands.Act{Event: flows.EvApprove, Ticket: "T-1", Comment: "batch=3"}, `/ops approve T-1 "batch=3"`},
	}
	for _, c := range cases {
		got := commands.Encode(c.act)
		if got != c.want {
			t.Errorf("Encode(%+v) = %q, want %q", c.act, got, c.want)
		}
		back, err := r.Parse(got)
		if err != nil || !reflect.DeepEqual(back, c.act) {
			t.Errorf("Parse(%q) = %#v, %v; want %#v", got, back, err, c.act)
		}
	}
}

func TestBatchIsTypedNotAComment(t *testing.T) {
	r := commands.Default()
	req, err := r.Parse("/ops release T-4#9 batch=2 after the sale")
	want := commands.Act{Event: flows.EvRelease, Ticket: "T-4", Version: 9, Batch: 2, Comment: "after the sale"}
	if err != nil || !reflect.DeepEqual(req, want) {
		t.Fatalf("got %#v, %v; want %#v", req, err, want)
	}
	// Only release and rollback take a batch; elsewhere it is words.
	req, _ = r.Parse("/ops approve T-4 batch=2")
	if a := req.(commands.Act); a.Batch != 0 || a.Comment != "batch=2" {
		t.Fatalf("approve read a batch: %#v", a)
	}
	for _, bad := range []string{"/ops release T-4 batch=0", "/ops rollback T-4 batch=1 batch=2"} {
		if _, err := r.Parse(bad); flows.CodeOf(err) != "usage" {
			t.Errorf("%q: err %v, want a usage error", bad, err)
		}
	}
}

func TestDecodeActAsksForAReason(t *testing.T) {
	r := commands.Default()
	a, ok := r.DecodeAct("/ops reject T-5#3")
	if !ok || !a.NeedsReason() || a.Ticket != "T-5" || a.Version != 3 {
		t.Fatalf("got %#v %v", a, ok)
	}
	if a, ok := r.DecodeAct("驳回 T-5 too risky"); !ok || a.NeedsReason() {
		t.Fatalf("a typed reject with a reason: %#v %v", a, ok)
	}
	for _, s := range []string{"/ops show T-5", "/ops new golive", "hello", "/ops approve"} {
		if _, ok := r.DecodeAct(s); ok {
			t.Errorf("%q decoded as an action", s)
		}
	}
}

// FuzzEncodeRoundTrip: whatever Parse makes of a line, an action encodes
// to text that parses back to the same action.
func FuzzEncodeRoundTrip(f *testing.F) {
	for _, s := range []string{"/ops approve T-1#3 ok", "/ops release T-2#4 batch=1", "/ops rollback T-5 确认 now", "/ops rollback T-5 \"confirm\"", `/ops reject T-3 "a \"b\" c"`,
		"/ops rollback T-9 batch=2 x y", "驳回 T-1 「理由」", `/ops approve T-1 a\b`, "/ops cancel T-7 batch=3", "/ops retry T-1 “x y”"} {
		f.Add(s)
	}
	r := commands.Default()
	f.Fuzz(func(t *testing.T, s string) {
		req, err := r.Parse(s)
		if err != nil {
			return
		}
		a, ok := req.(commands.Act)
		if !ok {
			return
		}
		enc := commands.Encode(a)
		if len(enc) > commands.MaxInput {
			return // documented: Parse refuses text this long
		}
		back, err := r.Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode(%#v)) = %q: %v", a, enc, err)
		}
		if !reflect.DeepEqual(back, a) {
			t.Fatalf("round trip of %q via %q:\n got %#v\nwant %#v", s, enc, back, a)
		}
		if d, ok := r.DecodeAct(enc); !ok || !reflect.DeepEqual(d, a) {
			t.Fatalf("DecodeAct(%q) = %#v %v", enc, d, ok)
		}
		if strings.Count(enc, "\n") != strings.Count(a.Comment, "\n") {
			t.Fatalf("encoding added lines: %q", enc)
		}
	})
}
