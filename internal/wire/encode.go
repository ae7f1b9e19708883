package wire

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fluxlimiter/flux"
)

// ErrorBody is the "error" object of a reply: a code as in the
// Nats-Service-Error-Code header, a stable reason word and a description
// for people.
type ErrorBody struct {
	Code        int
	Reason      string
	Description string
}

// AppendDecision appends d as a decision object. Every field is always
// present; durations are integer nanoseconds.
func AppendDecision(b []byte, d flux.Decision) []byte {
	if d.Allowed {
		b = append(b, `{"allowed":true,"limit":`...)
	} else {
		b = append(b, `{"allowed":false,"limit":`...)
	}
	b = strconv.AppendInt(b, int64(d.Limit), 10)
	b = append(b, `,"remaining":`...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, `,"retry_after_ns":`...)
	b = strconv.AppendInt(b, int64(d.RetryAfter), 10)
	b = append(b, `,"reset_after_ns":`...)
	b = strconv.AppendInt(b, int64(d.ResetAfter), 10)
	b = append(b, `,"delay_ns":`...)
	b = strconv.AppendInt(b, int64(d.Delay), 10)
	return append(b, '}')
}

// AppendErrorObject appends {"code":..,"reason":..,"description":..}.
func AppendErrorObject(b []byte, e ErrorBody) []byte {
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, `,"reason":`...)
	b = AppendString(b, e.Reason)
	b = append(b, `,"description":`...)
	b = AppendString(b, e.Description)
	return append(b, '}')
}

// AppendErrorReply appends {"error":{...}}: the body of an error reply and
// the shape of a failed batch item.
func AppendErrorReply(b []byte, e ErrorBody) []byte {
	b = append(b, `{"error":`...)
	b = AppendErrorObject(b, e)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendCheck appends a check request.
func AppendCheck(b []byte, limiter, key string, cost int) []byte {
	b = append(b, `{"limiter":`...)
	b = AppendString(b, limiter)
	b = append(b, `,"key":`...)
	b = AppendString(b, key)
	b = append(b, `,"cost":`...)
	b = strconv.AppendInt(b, int64(cost), 10)
	return append(b, '}')
}

// DecodeDecision decodes a decision object.
func DecodeDecision(data []byte) (flux.Decision, error) {
	s := scanner{b: data}
	var d flux.Decision
	if err := s.decision(&d); err != nil {
		return flux.Decision{}, err
	}
	return d, s.end()
}

// decision decodes a decision object at the scanner's position.
func (s *scanner) decision(d *flux.Decision) error {
	return s.object(func(name string) error {
		switch name {
		case "allowed":
			v, err := s.boolean()
			d.Allowed = v
			return err
		case "limit", "remaining", "retry_after_ns", "reset_after_ns", "delay_ns":
			v, ok, err := s.integer()
			if err != nil {
				return err
			}
			if !ok {
				return s.errorf("%s must be an integer", name)
			}
			setField(d, name, v)
			return nil
		}
		return s.skip(0)
	})
}

// errorObject decodes {"code":..,"reason":..,"description":..}. Strings are
// copied.
func (s *scanner) errorObject(e *ErrorBody) error {
	return s.object(func(name string) error {
		switch name {
		case "code":
			v, ok, err := s.integer()
			if err != nil {
				return err
			}
			if !ok {
				return s.errorf("code must be an integer")
			}
			e.Code = int(v)
		case "reason", "description":
			if s.peek() != '"' {
				return s.errorf("%s must be a string", name)
			}
			v, err := s.str()
			if err != nil {
				return err
			}
			v = string([]byte(v))
			if name == "reason" {
				e.Reason = v
			} else {
				e.Description = v
			}
		default:
			return s.skip(0)
		}
		return nil
	})
}

// DecodeErrorReply decodes the body of an error reply, {"error":{...}}.
// It reports false if data holds no error object.
func DecodeErrorReply(data []byte) (ErrorBody, bool) {
	s := scanner{b: data}
	var e ErrorBody
	found := false
	err := s.object(func(name string) error {
		if name != "error" {
			return s.skip(0)
		}
		found = true
		return s.errorObject(&e)
	})
	if err != nil || !found {
		return ErrorBody{}, false
	}
	return e, true
}

// DecodeResults decodes a batch reply, calling fn for each result in
// order with either a decision (e == nil) or an error object.
func DecodeResults(data []byte, fn func(i int, d flux.Decision, e *ErrorBody)) error {
	s := scanner{b: data}
	found := false
	err := s.object(func(name string) error {
		if name != "results" {
			return s.skip(0)
		}
		found = true
		i := 0
		return s.array(func() error {
			var d flux.Decision
			var e ErrorBody
			isErr := false
			err := s.object(func(name string) error {
				switch name {
				case "error":
					isErr = true
					return s.errorObject(&e)
				case "allowed":
					v, err := s.boolean()
					d.Allowed = v
					return err
				case "limit", "remaining", "retry_after_ns", "reset_after_ns", "delay_ns":
					v, ok, err := s.integer()
					if err != nil {
						return err
					}
					if !ok {
						return s.errorf("%s must be an integer", name)
					}
					setField(&d, name, v)
					return nil
				}
				return s.skip(0)
			})
			if err != nil {
				return err
			}
			if isErr {
				fn(i, flux.Decision{}, &e)
			} else {
				fn(i, d, nil)
			}
			i++
			return nil
		})
	})
	if err != nil {
		return err
	}
	if !found {
		return s.errorf("missing results")
	}
	return s.end()
}

func setField(d *flux.Decision, name string, n int64) {
	switch name {
	case "limit":
		d.Limit = int(n)
	case "remaining":
		d.Remaining = int(n)
	case "retry_after_ns":
		d.RetryAfter = time.Duration(n)
	case "reset_after_ns":
		d.ResetAfter = time.Duration(n)
	case "delay_ns":
		d.Delay = time.Duration(n)
	}
}
