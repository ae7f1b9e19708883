package node

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// configKeys are the YAML keys of each struct type a config file decodes
// into, by the name the YAML decoder reports it under ("node.LimiterConfig").
var configKeys = func() map[string][]string {
	m := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || m[t.String()] != nil {
			return
		}
		m[t.String()] = structKeys(t, walk)
	}
	walk(reflect.TypeOf(Config{}))
	return m
}()

// structKeys lists t's YAML keys, inlined structs' included, and walks the
// types of its fields.
func structKeys(t reflect.Type, walk func(reflect.Type)) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			keys = append(keys, structKeys(f.Type, walk)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys = append(keys, name)
		walk(f.Type)
	}
	return keys
}

// configSection says where a key of a type goes, for messages.
var configSection = map[string]string{
	"node.Config":        "top-level setting",
	"node.LimiterConfig": "limiter setting",
	"node.ClientUser":    "client user setting",
}

var unknownFieldRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)

// configError turns the YAML decoder's error into one line a person can
// act on: the file and line of each problem, and for an unknown key the
// valid key nearest to it, instead of the decoder's Go type names. file
// may be empty (a document in memory).
func configError(file string, err error) error {
	where := func(line string) string {
		if file == "" {
			return "line " + line
		}
		return file + ":" + line
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		if file != "" {
			return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, file, err)
		}
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := unknownFieldRE.FindStringSubmatch(e)
		if m == nil {
			line, rest, ok := strings.Cut(strings.TrimPrefix(e, "line "), ": ")
			if ok && strings.HasPrefix(e, "line ") {
				e = where(line) + ": " + rest
			} else if file != "" {
				e = file + ": " + e
			}
			msgs = append(msgs, e)
			continue
		}
		line, key, typ := m[1], m[2], m[3]
		what := configSection[typ]
		if what == "" {
			what = "setting"
		}
		msg := fmt.Sprintf("%s: unknown %s %q", where(line), what, key)
		if near := nearestKey(key, configKeys[typ]); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		msgs = append(msgs, msg)
	}
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(msgs, "; "))
}

// nearestKey is the key of keys closest to s in edit distance, if close
// enough to be the one meant ("" otherwise).
func nearestKey(s string, keys []string) string {
	best, bestD := "", max(2, len(s)/3)+1
	for _, k := range slices.Sorted(slices.Values(keys)) {
		if d := editDistance(strings.ToLower(s), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Damerau (optimal string alignment) distance: a
// swap of two neighbours, the commonest typo, counts as one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
