package node

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/fluxlimiter/flux/tracing"
)

// BenchmarkServeCheckTracing is the check endpoint's whole handler
// (Handle) with tracing off, on but not sampled (the sender's
// traceparent says "not sampled"), and on and sampled, every request
// carrying a traceparent header.
func BenchmarkServeCheckTracing(b *testing.B) {
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler // nil: tracing off
		flags   string
	}{
		{"off", nil, "01"},
		{"unsampled", sdktrace.ParentBased(sdktrace.AlwaysSample()), "00"},
		{"sampled", sdktrace.ParentBased(sdktrace.AlwaysSample()), "01"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var opts []Option
			if c.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(c.sampler)) // no exporter: spans are dropped when ended
				defer tp.Shutdown(context.Background())
				opts = append(opts, WithTracerProvider(tp))
			}
			n, err := New(benchConfig(b), nil, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Shutdown(context.Background())
			w, _ := pipelineOf(n, kindCheck)
			hdr := nats.Header{}
			tracing.HeaderCarrier(hdr).Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"+c.flags)
			bodies := checkBodies()
			reqs := make([][]*nats.Msg, len(bodies))
			for i := range reqs {
				m := msg(kindCheck, bodies[i])
				m.Header = hdr
				reqs[i] = []*nats.Msg{m}
			}
			i := 0
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				w.serve(reqs[i%len(reqs)])
				i++
			}
			reportCPU(b, cpu0, 1)
		})
	}
}
