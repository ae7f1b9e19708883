package wire

import "testing"

// TestKeyNormalisation pins what docs/PROTOCOL.md ("Keys") promises about
// how a key's JSON string becomes the bytes the limiter compares: escapes
// are decoded, a lone or mismatched surrogate escape becomes U+FFFD, raw
// bytes (invalid UTF-8 included) are kept as they are, and nothing else is
// normalised.
func TestKeyNormalisation(t *testing.T) {
	const fffd = "\xef\xbf\xbd"
	tests := []struct {
		name, json, key string
	}{
		// One key, several spellings: each of these is the key "a" U+FFFD.
		{"lone high surrogate", `"a\ud800"`, "a" + fffd},
		{"lone low surrogate", `"a\udfff"`, "a" + fffd},
		{"high surrogate then a non-surrogate escape", `"a\ud800\u0041"`, "a" + fffd + "A"},
		{"reversed pair", `"a\udc00\ud800"`, "a" + fffd + fffd},
		{"escaped U+FFFD", `"a\ufffd"`, "a" + fffd},
		{"raw U+FFFD", `"a` + fffd + `"`, "a" + fffd},
		// A valid pair is the character it encodes, as written raw.
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"raw astral", `"😀"`, "😀"},
		// Raw bytes are kept: invalid UTF-8 is not replaced, so it is a key
		// of its own (another than U+FFFD), with and without escapes
		// elsewhere in the string.
		{"raw invalid byte", "\"a\xff\"", "a\xff"},
		{"raw invalid byte with an escape", "\"a\xff\\n\"", "a\xff\n"},
		{"raw CESU-8 surrogate", "\"a\xed\xa0\x80\"", "a\xed\xa0\x80"},
		// No Unicode normalisation: é precomposed and decomposed differ.
		{"precomposed", `"\u00e9"`, "\u00e9"},
		{"decomposed", `"e\u0301"`, "e\u0301"},
		// Escaped ASCII is the ASCII byte.
		{"escaped ASCII", `"\u0061\/"`, "a/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var it Item
			if err := DecodeCheck([]byte(`{"limiter":"l","key":`+tc.json+`}`), &it); err != nil {
				t.Fatal(err)
			}
			if it.Key != tc.key {
				t.Fatalf("key %q, want %q", it.Key, tc.key)
			}
		})
	}
	// A raw control character is refused, as JSON requires.
	if err := DecodeCheck([]byte("{\"limiter\":\"l\",\"key\":\"a\x01\"}"), new(Item)); err == nil {
		t.Fatal("a raw control character in a key was accepted")
	}
	// The Go client (AppendString) sends invalid UTF-8 as \ufffd, so from
	// Go a key with invalid bytes arrives as U+FFFD, not as those bytes.
	var it Item
	if err := DecodeCheck(AppendCheck(nil, "l", "a\xff", 1), &it); err != nil {
		t.Fatal(err)
	}
	if it.Key != "a"+fffd {
		t.Fatalf("Go client key %q, want %q", it.Key, "a"+fffd)
	}
}
