"""Traces: W3C trace context in Kafka headers, and OpenTelemetry spans when tracing is on.

The SDK's `submit`/`publish` opens a PRODUCER span and puts its `traceparent` on the event;
the worker carries the event's trace context on to its result (and dead letter), and opens one
span per batch that links every event's context (OpenTelemetry's way for batches), with
`infer` and `produce` spans under it. Subscribers read the result's `traceparent` and continue
the event's trace.

Tracing is on when a tracer provider is given, or a real one is installed globally before
the client or worker starts; `configure_from_env()` installs one exporting over OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set (and the exporter is installed). Otherwise nothing is
recorded and the worker's per-event path does no tracing work at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
MAX_LINKS = 128  # links per batch span: enough to find any event's batch, bounded for big batches
_W3C = TraceContextTextMapPropagator()


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        found = [v.decode(errors="replace") for k, v in carrier if k == key]
        return found or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


def tracer(provider: TracerProvider | None = None) -> Tracer:
    """streamlattice's tracer from `provider`, else from the global provider."""
    return trace.get_tracer("streamlattice", tracer_provider=provider)


def recording(provider: TracerProvider | None = None) -> bool:
    """Whether spans from `provider` (else the global one) are recorded: tracing is on."""
    chosen = provider or trace.get_tracer_provider()
    return not isinstance(chosen, trace.NoOpTracerProvider | trace.ProxyTracerProvider)


def inject(headers: Headers, context: Context | None = None) -> Headers:
    """Append the `traceparent` (and `tracestate`) of `context` (else the current one) to `headers`."""
    _W3C.inject(headers, context=context, setter=_HeaderSetter())
    return headers


def links(headers_of_events: Iterable[Sequence[tuple[str, bytes]] | None]) -> list[Link]:
    """Links to the trace context each event carries (events without one are skipped)."""
    out: list[Link] = []
    getter = _HeaderGetter()
    for headers in headers_of_events:
        if not headers:
            continue
        span_context = trace.get_current_span(_W3C.extract(headers, getter=getter)).get_span_context()
        if span_context.is_valid:
            out.append(Link(span_context))
            if len(out) == MAX_LINKS:
                break
    return out


def configure_from_env(service: str) -> bool:
    """Install an OTLP-exporting tracer provider if OTEL_EXPORTER_OTLP_ENDPOINT is set; whether it did."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install opentelemetry-exporter-otlp-proto-http (no traces are exported)"
        )
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkTracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
