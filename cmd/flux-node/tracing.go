package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/fluxlimiter/flux/node"
)

// tracer is the node's trace pipeline: an OTLP/HTTP exporter behind a
// batching span processor. Its zero value (tracing off) is ready to use.
type tracer struct {
	tp *sdktrace.TracerProvider
}

// otlpFromEnv reports whether the standard OpenTelemetry variables name a
// collector for traces.
func otlpFromEnv() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// newTracer sets up the exporter cfg asks for: none when neither
// otlp_endpoint nor the OTEL_EXPORTER_OTLP_* variables name a collector.
// Requests without a sampled parent are sampled at cfg.TraceSample; a
// sender's sampled trace is always continued.
func newTracer(ctx context.Context, cfg node.Config) (*tracer, error) {
	if cfg.OTLPEndpoint == "" && !otlpFromEnv() {
		return &tracer{}, nil
	}
	var opts []otlptracehttp.Option
	if cfg.OTLPEndpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(tracesURL(cfg.OTLPEndpoint)))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("flux-node: OTLP exporter: %w", err)
	}
	sample := cfg.TraceSample
	if sample == 0 {
		sample = node.DefaultTraceSample
	}
	attrs := []attribute.KeyValue{semconv.ServiceName("flux-node")}
	if cfg.NodeID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(cfg.NodeID))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sample))),
		sdktrace.WithResource(res),
	)
	return &tracer{tp: tp}, nil
}

// tracesURL is the collector's traces URL for an endpoint: as given if it
// has a path, else with /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT is read.
func tracesURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || strings.Trim(u.Path, "/") != "" {
		return endpoint // validated already; a path is the caller's choice
	}
	u.Path = "/v1/traces"
	return u.String()
}

// options returns the node options that make the node trace.
func (t *tracer) options() []node.Option {
	if t.tp == nil {
		return nil
	}
	return []node.Option{node.WithTracerProvider(t.tp)}
}

// shutdown exports the spans still buffered and stops the exporter.
func (t *tracer) shutdown(ctx context.Context) error {
	if t.tp == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}
