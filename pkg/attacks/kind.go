package attacks

import (
	"fmt"
	"strings"
)

// Kind is a kind of attack. The numeric values are stored on disk by the
// cluster nodes: append new kinds before NumKinds, never renumber.
type Kind uint8

// The kinds, in the order proxycheck.io lists them in an attack history.
const (
	KindInvalid      Kind = iota
	KindProbe             // "probe": Vulnerability Probing
	KindForumSpam         // "forum-spam": Forum Spam
	KindLogin             // "login": Login Attempt
	KindRegistration      // "registration": Registration Attempt
	KindCommentSpam       // "comment-spam": Comment Spam
	KindDDoS              // "ddos": Denial of Service
	KindForm              // "form": Form Submission

	// NumKinds bounds the kind values (KindInvalid included).
	NumKinds
)

var kindInfo = [NumKinds]struct{ word, label string }{
	KindInvalid:      {"", ""},
	KindProbe:        {"probe", "Vulnerability Probing"},
	KindForumSpam:    {"forum-spam", "Forum Spam"},
	KindLogin:        {"login", "Login Attempt"},
	KindRegistration: {"registration", "Registration Attempt"},
	KindCommentSpam:  {"comment-spam", "Comment Spam"},
	KindDDoS:         {"ddos", "Denial of Service"},
	KindForm:         {"form", "Form Submission"},
}

// aliases are further words accepted in reports, each meaning a kind.
var aliases = map[string]Kind{
	"scan":    KindProbe,
	"exploit": KindProbe,
	"spam":    KindCommentSpam,
	"dos":     KindDDoS,
}

// Kinds lists the valid kinds in label order.
func Kinds() []Kind {
	out := make([]Kind, 0, NumKinds-1)
	for k := KindInvalid + 1; k < NumKinds; k++ {
		out = append(out, k)
	}
	return out
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k > KindInvalid && k < NumKinds }

// String returns the kind's word ("login"), as reports and the wire spell it.
func (k Kind) String() string {
	if !k.Valid() {
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
	return kindInfo[k].word
}

// Label returns the name proxycheck.io shows for the kind ("Login Attempt").
func (k Kind) Label() string {
	if !k.Valid() {
		return ""
	}
	return kindInfo[k].label
}

// KindWords describes the accepted words, for error messages and help.
const KindWords = "login, registration, probe (or scan, exploit), forum-spam, comment-spam (or spam), ddos (or dos), form"

// ParseKind returns the kind a word names, ignoring case and surrounding
// space; aliases are accepted.
func ParseKind(s string) (Kind, error) {
	w := strings.ToLower(strings.TrimSpace(s))
	for k := KindInvalid + 1; k < NumKinds; k++ {
		if kindInfo[k].word == w {
			return k, nil
		}
	}
	if k, ok := aliases[w]; ok {
		return k, nil
	}
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return KindInvalid, fmt.Errorf("kind %q unknown: want one of %s", s, KindWords)
}
