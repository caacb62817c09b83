package commands

import (
	"regexp"
	"strconv"
	"strings"

	"opsbot/flows"
)

// batchTok is a release or rollback's batch argument ("batch=2").
var batchTok = regexp.MustCompile(`^batch=([0-9]{1,6})$`)

// readAct reads an action's arguments: the ticket (with a card's version),
// for release and rollback a "batch=N", and the comment.
func readAct(s *Spec, a []string) (Act, error) {
	if len(a) == 0 {
		return Act{}, usageErr(s, "需要工单号 which ticket?")
	}
	id, ver, err := ticketRef(s, a[0])
	if err != nil {
		return Act{}, err
	}
	req := Act{Event: flows.Event(s.Name), Ticket: id, Version: ver}
	var words []string
	for _, w := range a[1:] {
		if w == "confirm" || w == "确认" {
			req.Confirm = true
			continue
		}
		if m := batchTok.FindStringSubmatch(w); m != nil && (req.Event == flows.EvRelease || req.Event == flows.EvRollback) {
			n, _ := strconv.Atoi(m[1])
			if n < 1 {
				return Act{}, usageErr(s, "批次从 1 开始 batches count from 1: %q", w)
			}
			if req.Batch != 0 && req.Batch != n {
				return Act{}, usageErr(s, "只能指定一个批次 one batch at a time")
			}
			req.Batch = n
			continue
		}
		words = append(words, w)
	}
	req.Comment = strings.TrimSpace(strings.Join(words, " "))
	return req, nil
}

// Encode writes an action as the command a button carries (or a person
// could type): "/ops release T-42#7 batch=2 confirm", the comment quoted. It is
// the inverse of Parse: Parse(Encode(a)) gives a back for every Act that
// Parse can give (a reject needs a comment; text longer than MaxInput is
// refused).
func Encode(a Act) string {
	var b strings.Builder
	b.WriteString("/ops ")
	b.WriteString(string(a.Event))
	b.WriteString(" ")
	b.WriteString(a.Ticket)
	if a.Version > 0 {
		b.WriteString("#" + strconv.FormatInt(a.Version, 10))
	}
	if a.Batch > 0 {
		b.WriteString(" batch=" + strconv.Itoa(a.Batch))
	}
	if a.Confirm {
		b.WriteString(" confirm")
	}
	if a.Comment != "" {
		b.WriteString(` "`)
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		b.WriteString(r.Replace(a.Comment))
		b.WriteString(`"`)
	}
	return b.String()
}

// DecodeAct reads a button's value (or a typed action) into an Act
// without requiring a reject's reason: what a transport needs to decide
// whether to ask for one before it runs. ok is false for anything that
// is not an action on a ticket.
func (r *Registry) DecodeAct(text string) (Act, bool) {
	name, args, ok := r.Command(text)
	if !ok {
		return Act{}, false
	}
	spec, _ := r.Lookup(name)
	switch flows.Event(name) {
	case flows.EvApprove, flows.EvReject, flows.EvCancel, flows.EvRetry, flows.EvRollback, flows.EvRelease:
	default:
		return Act{}, false
	}
	a, err := readAct(spec, args)
	return a, err == nil
}

// NeedsReason says the action cannot run without a comment: a reject
// from a button asks for its reason first.
func (a Act) NeedsReason() bool { return a.Event == flows.EvReject && a.Comment == "" }
