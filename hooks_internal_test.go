package flux

import (
	"context"
	"testing"
)

// A limiter without hooks or middleware has no extension: its checks test
// one nil pointer and nothing else.
func TestNoHooksNoExtension(t *testing.T) {
	for name, opts := range map[string][]Option{
		"none":           nil,
		"empty hooks":    {WithHooks(Hooks{})},
		"nil middleware": {WithMiddleware(nil)},
	} {
		l, err := New(Limit{Rate: 1}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if l.ext != nil {
			t.Errorf("%s: extension set", name)
		}
		l.Close()
	}
	l, err := New(Limit{Rate: 1}, WithHooks(Hooks{BeforeCheck: func(context.Context, string, int) {}}))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.ext == nil || !l.ext.hooked || l.ext.timed {
		t.Fatalf("BeforeCheck only: %+v", l.ext)
	}
}
