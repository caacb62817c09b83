package commands

import (
	"fmt"
	"opsbot/state"
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/width"

	"opsbot/flows"
)

// MaxInput bounds what the parser reads; chat messages are far shorter.
const MaxInput = 8000

// Parse turns a typed line or a button value into a request. It accepts
// "/ops approve T-42", "ops approve T-42", "approve T-42", an @-mention
// ("@opsbot status T-42") and a few phrases ("what is waiting for me").
func (r *Registry) Parse(text string) (Request, error) {
	if len(text) > MaxInput {
		return nil, &flows.UserError{Code: "too_long",
			Message: fmt.Sprintf("消息太长：最多 %d 字节（约 %d 个汉字），这条有 %d · a command is at most %d bytes (about %d Chinese characters); this one has %d",
				MaxInput, MaxInput/3, len(text), MaxInput, MaxInput/3, len(text)),
			Hint: "长内容请放在链接里 put long text behind a link"}
	}
	text = strings.TrimSpace(text)
	text = mentionRe.ReplaceAllString(text, "")
	text = strings.TrimSpace(text)
	if t, ok := cutWord(text, "/ops"); ok {
		text = t
	} else if t, ok := cutWord(text, "ops"); ok {
		text = t
	}
	if req, ok := phrase(text); ok {
		return req, nil
	}
	toks, err := Tokenize(text)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return Help{}, nil
	}
	toks = r.split(toks)
	name := strings.ToLower(toks[0])
	spec, ok := r.Lookup(name)
	if !ok {
		if hint, ok := nearWords[name]; ok {
			return nil, &flows.UserError{Code: "unknown_command", Message: "未知命令 unknown command " + quoteTok(toks[0]) + ": " + hint,
				Hint: "/ops help"}
		}
		return nil, &flows.UserError{Code: "unknown_command",
			Message: "未知命令 unknown command " + quoteTok(toks[0]) + DidYouMean(name, r.Names()),
			Hint:    "/ops help"}
	}
	return spec.Parse(toks[1:])
}

// nearWords are words people type that name no one command; the answer
// points at the ones they mean.
var nearWords = map[string]string{
	"审批":     "同意用 同意 T-9 (approve)，驳回用 驳回 T-9 原因 (reject) · to approve type 同意 T-9, to reject 驳回 T-9 <reason>",
	"review": "to approve type /ops approve T-9, to reject /ops reject T-9 <reason> · 同意 T-9 / 驳回 T-9 原因",
}

// split reads what people type without the spaces a command needs:
// full-width letters and signs ("Ｔ－９", "＝"), and a command word run
// into its ticket ("同意T-9").
func (r *Registry) split(toks []string) []string {
	toks[0] = width.Fold.String(toks[0])
	for i := 1; i < len(toks); i++ {
		if k, v, ok := strings.Cut(toks[i], "＝"); ok && !strings.Contains(k, "=") {
			toks[i] = width.Fold.String(k) + "=" + v
		}
	}
	if _, ok := r.Lookup(strings.ToLower(toks[0])); ok {
		return toks
	}
	if strings.ToLower(toks[0]) != toks[0] && len(strings.ToLower(toks[0])) != len(toks[0]) {
		return toks
	}
	for _, name := range r.Names() {
		rest, ok := strings.CutPrefix(strings.ToLower(toks[0]), name)
		if !ok || rest == "" {
			continue
		}
		if _, isID := state.ParseID(rest); isID && strings.ContainsAny(rest[:1], "Tt") {
			return append([]string{name, toks[0][len(toks[0])-len(rest):]}, toks[1:]...)
		}
	}
	return toks
}

// Command names the command text asks for (its canonical name, aliases
// resolved, "/ops" and a leading mention removed) and its arguments, without
// checking them: what a transport needs to decide how to present the answer
// (open a form for "new <flow>", post a new ticket's card in the channel).
// ok is false when text names no known command.
func (r *Registry) Command(text string) (name string, args []string, ok bool) {
	if len(text) > MaxInput {
		return "", nil, false
	}
	text = strings.TrimSpace(mentionRe.ReplaceAllString(strings.TrimSpace(text), ""))
	if t, cut := cutWord(text, "/ops"); cut {
		text = t
	} else if t, cut := cutWord(text, "ops"); cut {
		text = t
	}
	toks, err := Tokenize(text)
	if err != nil || len(toks) == 0 {
		return "", nil, false
	}
	toks = r.split(toks)
	spec, found := r.Lookup(strings.ToLower(toks[0]))
	if !found {
		return "", nil, false
	}
	return spec.Name, toks[1:], true
}

var mentionRe = regexp.MustCompile(`^(<@[A-Za-z0-9]+>|[@＠]opsbot\b)[\s:：,，]*`)

func cutWord(s, w string) (string, bool) {
	if len(s) >= len(w) && strings.EqualFold(s[:len(w)], w) && (len(s) == len(w) || unicode.IsSpace(rune(s[len(w)]))) {
		return strings.TrimSpace(s[len(w):]), true
	}
	return s, false
}

var waitingRe = regexp.MustCompile(`(?i)^(what('s| is)? (is )?waiting( for me)?|waiting for me|my approvals|待我审批|我的待办|待办)[?？!！。.]*$`)

var greetingRe = regexp.MustCompile(`(?i)^(hi|hello|hey|你好|您好|嗨|在吗|在么|哈喽)[!！。.~～\s]*$`)

// phrase answers the natural phrasings used in @-mentions.
func phrase(s string) (Request, bool) {
	if greetingRe.MatchString(strings.TrimSpace(s)) {
		return Help{Short: true}, true
	}
	if waitingRe.MatchString(strings.TrimSpace(s)) {
		return List{Scope: "waiting", Page: 1}, true
	}
	switch strings.ToLower(strings.Trim(s, "?？!！。. ")) {
	case "my tickets", "mine", "我的工单":
		return List{Scope: "mine", Page: 1}, true
	}
	return nil, false
}

func quoteTok(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return `"` + s + `"`
}

var closers = map[rune]rune{'"': '"', '\'': '\'', '“': '”', '‘': '’', '「': '」', '『': '』'}

// Tokenize splits on white space, keeping quoted parts together. Quotes may
// start mid-token (key="a b"); ASCII, Chinese curly and corner quotes work.
// Inside double quotes a backslash escapes the next character.
func Tokenize(s string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	inTok := false
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		if close, ok := closers[c]; ok {
			inTok = true
			j := i + 1
			for ; j < len(rs) && rs[j] != close; j++ {
				if rs[j] == '\\' && c == '"' && j+1 < len(rs) {
					j++
				}
				cur.WriteRune(rs[j])
			}
			if j >= len(rs) {
				return nil, &flows.UserError{Code: "unclosed_quote", Message: "引号未闭合 a quote is not closed: " + string(c),
					Hint: `例 e.g. /ops new golive service=payments impact="checkout down 5 min"`}
			}
			i = j
			continue
		}
		if unicode.IsSpace(c) {
			if inTok {
				toks = append(toks, cur.String())
				cur.Reset()
				inTok = false
			}
			continue
		}
		inTok = true
		cur.WriteRune(c)
	}
	if inTok {
		toks = append(toks, cur.String())
	}
	return toks, nil
}
