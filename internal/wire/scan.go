package wire

import (
	"fmt"
	"math"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// scanner reads one JSON document from b. Its methods validate what they
// read; on a syntax error they return an error wrapping ErrMalformed that
// names the offset.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrMalformed, s.i, fmt.Sprintf(format, args...))
}

// ws skips whitespace.
func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// end checks that nothing but whitespace follows.
func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.errorf("unexpected data after the JSON value")
	}
	return nil
}

// object reads an object, calling field for each member with the scanner
// positioned on its value; field must consume the value. Whitespace around
// tokens is skipped.
func (s *scanner) object(field func(name string) error) error {
	s.ws()
	if s.peek() != '{' {
		return s.errorf("expected an object")
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.peek() != '"' {
			return s.errorf("expected a field name")
		}
		name, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.peek() != ':' {
			return s.errorf("expected ':'")
		}
		s.i++
		s.ws()
		if err := field(name); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errorf("expected ',' or '}'")
		}
	}
}

// array reads an array, calling elem for each element with the scanner
// positioned on it; elem must consume it.
func (s *scanner) array(elem func() error) error {
	s.ws()
	if s.peek() != '[' {
		return s.errorf("expected an array")
	}
	s.i++
	s.ws()
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if err := elem(); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.errorf("expected ',' or ']'")
		}
	}
}

// str reads a string. Without escapes the result aliases s.b; with them it
// is a new string.
func (s *scanner) str() (string, error) {
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			if i == start {
				return "", nil
			}
			return unsafe.String(&s.b[start], i-start), nil
		case c == '\\':
			return s.strSlow(start, i)
		case c < 0x20:
			s.i = i
			return "", s.errorf("control character in string")
		}
	}
	s.i = len(s.b)
	return "", s.errorf("unterminated string")
}

// strSlow decodes a string with escapes; b[start:i] holds none.
func (s *scanner) strSlow(start, i int) (string, error) {
	buf := make([]byte, 0, len(s.b)-start)
	buf = append(buf, s.b[start:i]...)
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return string(buf), nil
		case c < 0x20:
			s.i = i
			return "", s.errorf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(s.b) {
			break
		}
		e := s.b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(s.b, i)
			if !ok {
				s.i = i
				return "", s.errorf("bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(s.b) && s.b[i] == '\\' && s.b[i+1] == 'u' {
					if v, ok := hex4(s.b, i+2); ok {
						r2 = v
					}
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			s.i = i - 1
			return "", s.errorf("bad escape")
		}
	}
	s.i = len(s.b)
	return "", s.errorf("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// literal reads the exact word w (true, false, null).
func (s *scanner) literal(w string) error {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return s.errorf("invalid literal")
	}
	s.i += len(w)
	return nil
}

// number reads a JSON number and returns its text.
func (s *scanner) number() ([]byte, error) {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	default:
		return nil, s.errorf("invalid number")
	}
	if s.peek() == '.' {
		s.i++
		if c := s.peek(); c < '0' || c > '9' {
			return nil, s.errorf("invalid number")
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if c := s.peek(); c < '0' || c > '9' {
			return nil, s.errorf("invalid number")
		}
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	}
	return s.b[start:s.i], nil
}

// integer reads a number; ok is false if it is valid JSON but not an
// integer that fits in an int64. An integral value written with a fraction
// or an exponent (1.0, 1e0, 10e-1, 2.50e1) is an integer: languages whose
// JSON writes integral numbers as floats send costs so. The test is exact,
// on the decimal digits, so 1.0000000000000000001 is not integral although
// it rounds to 1 as a float64.
func (s *scanner) integer() (n int64, ok bool, err error) {
	text, err := s.number()
	if err != nil {
		return 0, false, err
	}
	neg := text[0] == '-'
	if neg {
		text = text[1:]
	}
	// number validated the syntax: digits, then optionally '.' and
	// digits, then optionally e or E, a sign and digits. The value is
	// the digits of both parts × 10^exp.
	i := 0
	for i < len(text) && '0' <= text[i] && text[i] <= '9' {
		i++
	}
	intPart, fracPart := text[:i], text[i:i]
	if i < len(text) && text[i] == '.' {
		j := i + 1
		for j < len(text) && '0' <= text[j] && text[j] <= '9' {
			j++
		}
		fracPart, i = text[i+1:j], j
	}
	exp := 0
	if i < len(text) { // e or E
		t, eneg := text[i+1:], false
		if t[0] == '+' || t[0] == '-' {
			eneg, t = t[0] == '-', t[1:]
		}
		for _, c := range t {
			if exp < 1e6 { // beyond, every non-zero value is out of range
				exp = exp*10 + int(c-'0')
			}
		}
		if eneg {
			exp = -exp
		}
	}
	exp -= len(fracPart)
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return fracPart[k-len(intPart)]
	}
	lo, hi := 0, len(intPart)+len(fracPart) // the significant digits
	for lo < hi && digit(lo) == '0' {
		lo++
	}
	for exp < 0 && lo < hi && digit(hi-1) == '0' {
		hi, exp = hi-1, exp+1
	}
	switch {
	case lo == hi:
		return 0, true, nil
	case exp < 0:
		return 0, false, nil // a fraction
	case hi-lo+exp > 20:
		return 0, false, nil // out of range
	}
	var u uint64
	for k := lo; k < hi+exp; k++ {
		c := byte('0')
		if k < hi {
			c = digit(k)
		}
		if u > (math.MaxUint64-9)/10 {
			return 0, false, nil
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case !neg && u <= math.MaxInt64:
		return int64(u), true, nil
	case neg && u <= 1<<63:
		return -int64(u), true, nil
	}
	return 0, false, nil
}

// skip reads and discards one value of any kind, validating it.
func (s *scanner) skip(depth int) error {
	if depth > MaxDepth {
		return s.errorf("nesting deeper than %d", MaxDepth)
	}
	s.ws()
	switch c := s.peek(); {
	case c == '{':
		return s.object(func(string) error { return s.skip(depth + 1) })
	case c == '[':
		return s.array(func() error { return s.skip(depth + 1) })
	case c == '"':
		_, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	case c == 0 && s.i >= len(s.b):
		return s.errorf("unexpected end of input")
	}
	return s.errorf("unexpected character %q", s.peek())
}

// boolean reads true or false.
func (s *scanner) boolean() (bool, error) {
	switch s.peek() {
	case 't':
		return true, s.literal("true")
	case 'f':
		return false, s.literal("false")
	}
	return false, s.errorf("expected a boolean")
}
