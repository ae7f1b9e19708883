package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/cluster"
	"github.com/fluxlimiter/flux/internal/wire"
)

// The error replies of the request pipeline, built here and nowhere else
// (docs/PROTOCOL.md lists them). A denial is a decision, never an error.

func errTooLarge(size, limit int) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeTooLarge, Reason: wire.ReasonTooLarge,
		Description: fmt.Sprintf("payload of %d bytes exceeds max_payload %d", size, limit)}
}

func errTooMany(limit int) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeTooLarge, Reason: wire.ReasonTooLarge,
		Description: fmt.Sprintf("batch holds more than max_batch %d requests", limit)}
}

func errMalformed(err error) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonMalformed, Description: err.Error()}
}

// errItem is the error of an item the decoder flagged (a field of the
// wrong type, a fractional cost...).
func errItem(it *wire.Item) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: it.Reason, Description: it.Desc}
}

func errMissingLimiter() wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonInvalidRequest, Description: "missing limiter"}
}

func errUnknownLimiter(name string) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeNotFound, Reason: wire.ReasonUnknownLimiter, Description: "unknown limiter " + quoteName(name)}
}

func errEmptyKey() wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonEmptyKey, Description: "missing or empty key"}
}

func errKeyTooLong(size, limit int) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonKeyTooLong,
		Description: fmt.Sprintf("key of %d bytes is longer than %d", size, limit)}
}

func errCostAboveCapacity(cost int64, e *limiterEntry) wire.ErrorBody {
	return wire.ErrorBody{Code: wire.CodeBadRequest, Reason: wire.ReasonCostExceedsCapacity,
		Description: fmt.Sprintf("cost %d exceeds the capacity %d of limiter %s", cost, e.capacity, quoteName(e.name))}
}

// errorFor maps an error of a limiter or of the Coordinator to its reply.
func errorFor(err error) wire.ErrorBody {
	code, reason := wire.CodeInternal, wire.ReasonInternal
	switch {
	case errors.Is(err, flux.ErrEmptyKey):
		code, reason = wire.CodeBadRequest, wire.ReasonEmptyKey
	case errors.Is(err, flux.ErrKeyTooLong):
		code, reason = wire.CodeBadRequest, wire.ReasonKeyTooLong
	case errors.Is(err, flux.ErrInvalidCost):
		code, reason = wire.CodeBadRequest, wire.ReasonInvalidCost
	case errors.Is(err, flux.ErrCostExceedsBurst):
		code, reason = wire.CodeBadRequest, wire.ReasonCostExceedsCapacity
	case errors.Is(err, flux.ErrOverloaded), errors.Is(err, flux.ErrFull):
		code, reason = wire.CodeUnavailable, wire.ReasonOverloaded
	case errors.Is(err, flux.ErrClosed), errors.Is(err, cluster.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code, reason = wire.CodeUnavailable, wire.ReasonShuttingDown
	}
	return wire.ErrorBody{Code: code, Reason: reason, Description: err.Error()}
}

// codeString is an error code as text, without allocating for the
// codes the node answers.
func codeString(code int) string {
	switch code {
	case wire.CodeBadRequest:
		return "400"
	case wire.CodeNotFound:
		return "404"
	case wire.CodeTooLarge:
		return "413"
	case wire.CodeInternal:
		return "500"
	case wire.CodeUnavailable:
		return "503"
	}
	return fmt.Sprint(code)
}
