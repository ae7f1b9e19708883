package names

import (
	"errors"
	"testing"

	"github.com/fluxlimiter/flux/store"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		limiter string
		keys    []string
		ok      bool
	}{
		{"l", nil, true},
		{"l", []string{"a", "b"}, true},
		{"", nil, false},
		{"", []string{"a"}, false},
		{"l", []string{"a", ""}, false},
	} {
		err := Check(c.limiter, c.keys...)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, store.ErrInvalidKey)) {
			t.Errorf("Check(%q, %q) = %v", c.limiter, c.keys, err)
		}
	}
	if err := EntryKeys([]store.Entry{{Key: "a"}, {Key: ""}}); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("EntryKeys with an empty key: %v", err)
	}
	if err := EntryKeys([]store.Entry{{Key: "a"}}); err != nil {
		t.Errorf("EntryKeys: %v", err)
	}
}
