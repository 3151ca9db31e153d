package main

import (
	"regexp"
	"strings"
)

// termEscape matches terminal escape sequences: CSI (colours, cursor
// moves, screen clears), OSC (window titles, hyperlinks, clipboard
// writes), DCS/APC/PM/SOS strings and two-byte escapes.
var termEscape = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b[\]PX^_][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]`)

// safe makes text that came from the cloud (names, descriptions, fault
// messages — anything a tenant may have set) safe to print on an
// operator's terminal: escape sequences and control characters (C0 but
// nothing, C1, DEL) are removed, as are the bidirectional overrides that
// make text read differently from what it is; invalid UTF-8 becomes
// U+FFFD. A tenant naming a server "\x1b]0;...\x07" or "\x1b[2J" cannot
// retitle, clear or rewrite the operator's terminal through capsule.
func safe(s string) string {
	if isPlain(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = termEscape.ReplaceAllString(s, "")
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			return -1
		case r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return -1
		}
		return r
	}, s)
}

// isPlain: printable ASCII only, the common case, needs no work.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
