package flux_test

import (
	"os"
	"strings"
	"testing"
)

// The README's quick start is examples/quickstart/main.go, which the build
// compiles and vets: the block must stay identical to it, so that it
// compiles as written.
func TestReadmeQuickStartCompiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile("examples/quickstart/main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## Quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	_, rest, ok = strings.Cut(rest, "```go\n")
	if !ok {
		t.Fatal("the quick start has no Go block")
	}
	block, _, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("the quick start's Go block does not end")
	}
	if block != string(program) {
		t.Fatalf("the README's quick start differs from examples/quickstart/main.go; copy the program into the README:\n%s", program)
	}
}
