// Package wire is flux-node's JSON wire format (docs/PROTOCOL.md): an
// allocation-light decoder for check requests, reply encoders built on
// strconv.Append*, and the matching request encoders and reply decoders the
// Go client uses.
//
// It is a hand-written codec rather than encoding/json because decoding and
// encoding cost more than the rate-limit decision itself. Decoded strings
// alias the input buffer unless they contained escapes; callers must leave
// the input unmodified while they use them and must copy what they keep.
//
// Every function is safe for simultaneous use; none keeps state between
// calls.
package wire

import (
	"errors"
	"fmt"
)

// Error codes, as carried by the Nats-Service-Error-Code header and by
// "error" objects in replies.
const (
	CodeBadRequest  = 400 // malformed JSON, bad key, bad cost, cost above capacity
	CodeNotFound    = 404 // unknown limiter
	CodeTooLarge    = 413 // payload or batch too large
	CodeInternal    = 500 // the node failed (clock failure, internal panic)
	CodeUnavailable = 503 // overloaded or shutting down
)

// Reasons: a stable machine-readable word for each error, carried in the
// "reason" field of error objects. Clients map them to typed errors.
const (
	ReasonMalformed           = "malformed"             // 400: not valid JSON
	ReasonInvalidRequest      = "invalid_request"       // 400: a field of the wrong type, a missing limiter
	ReasonEmptyKey            = "empty_key"             // 400: key missing or ""
	ReasonKeyTooLong          = "key_too_long"          // 400
	ReasonInvalidCost         = "invalid_cost"          // 400: negative, fractional or out of range
	ReasonCostExceedsCapacity = "cost_exceeds_capacity" // 400: cost above the limiter's capacity
	ReasonUnknownLimiter      = "unknown_limiter"       // 404
	ReasonTooLarge            = "too_large"             // 413
	ReasonInternal            = "internal"              // 500
	ReasonOverloaded          = "overloaded"            // 503
	ReasonShuttingDown        = "shutting_down"         // 503
)

// Decoding errors of a whole request.
var (
	// ErrMalformed: the request is not valid JSON of the expected shape.
	ErrMalformed = errors.New("malformed request")
	// ErrTooMany: a batch has more items than allowed.
	ErrTooMany = errors.New("too many requests in batch")
)

// MaxDepth bounds the nesting of JSON values the decoder skips over.
const MaxDepth = 64

// Item is one decoded check: the request of a flux.v1.check call, or one
// element of a flux.v1.check_batch call.
type Item struct {
	// Limiter and Key alias the input unless they contained escapes.
	Limiter string
	Key     string
	// Cost is 1 unless the request said otherwise.
	Cost int64
	// HasLimiter and HasKey report whether the fields were present.
	HasLimiter, HasKey bool
	// Reason and Desc are set when the item is valid JSON but unusable
	// (a field of the wrong type, a fractional cost...): the error to
	// answer it with, as code 400.
	Reason string
	Desc   string
}

func (it *Item) reset() { *it = Item{Cost: 1} }

func (it *Item) fail(reason, desc string) {
	if it.Reason == "" {
		it.Reason, it.Desc = reason, desc
	}
}

// DecodeCheck decodes a check request into it. It returns an error wrapping
// ErrMalformed if data is not a JSON object; problems with field values are
// reported in it.Reason instead.
func DecodeCheck(data []byte, it *Item) error {
	s := scanner{b: data}
	it.reset()
	s.ws()
	if err := s.item(it); err != nil {
		return err
	}
	return s.end()
}

// DecodeBatch decodes a batch request, appending its items to items, and
// returns the extended slice. It fails with ErrTooMany as soon as the batch
// holds more than max items (without reading further), and with
// ErrMalformed if data is not a JSON object with a "requests" array.
func DecodeBatch(data []byte, items []Item, max int) ([]Item, error) {
	s := scanner{b: data}
	s.ws()
	found := false
	err := s.object(func(name string) error {
		if name != "requests" {
			return s.skip(0)
		}
		found = true
		if s.peek() != '[' {
			return s.errorf("requests must be an array")
		}
		items = items[:0]
		return s.array(func() error {
			if len(items) >= max {
				return fmt.Errorf("%w: more than %d", ErrTooMany, max)
			}
			items = append(items, Item{})
			it := &items[len(items)-1]
			it.reset()
			return s.item(it)
		})
	})
	if err != nil {
		return items, err
	}
	if !found {
		return items, fmt.Errorf("%w: missing requests", ErrMalformed)
	}
	return items, s.end()
}

// item decodes one check object.
func (s *scanner) item(it *Item) error {
	return s.object(func(name string) error {
		switch name {
		case "limiter":
			return s.stringField(&it.Limiter, &it.HasLimiter, it, "limiter")
		case "key":
			return s.stringField(&it.Key, &it.HasKey, it, "key")
		case "cost":
			return s.costField(it)
		default:
			return s.skip(0)
		}
	})
}

func (s *scanner) stringField(dst *string, has *bool, it *Item, name string) error {
	switch s.peek() {
	case '"':
		v, err := s.str()
		if err != nil {
			return err
		}
		*dst, *has = v, true
		return nil
	case 'n':
		if err := s.literal("null"); err != nil {
			return err
		}
		*dst, *has = "", false
		return nil
	}
	if err := s.skip(0); err != nil {
		return err
	}
	it.fail(ReasonInvalidRequest, name+" must be a string")
	return nil
}

func (s *scanner) costField(it *Item) error {
	c := s.peek()
	if c == 'n' {
		if err := s.literal("null"); err != nil {
			return err
		}
		it.Cost = 1
		return nil
	}
	if c != '-' && (c < '0' || c > '9') {
		if err := s.skip(0); err != nil {
			return err
		}
		it.fail(ReasonInvalidCost, "cost must be an integer")
		return nil
	}
	n, ok, err := s.integer()
	if err != nil {
		return err
	}
	switch {
	case !ok:
		it.fail(ReasonInvalidCost, "cost must be an integer between 0 and the limiter's capacity")
	case n < 0:
		it.fail(ReasonInvalidCost, "cost must not be negative")
	default:
		it.Cost = n
	}
	return nil
}
