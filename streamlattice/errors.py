"""The one exception hierarchy of streamlattice: every message says what was wrong and what to do."""

from __future__ import annotations


class StreamLatticeError(Exception):
    """Base of every error streamlattice raises on purpose."""


class ConfigError(StreamLatticeError):
    """lattice.toml (or a flag) is missing, malformed or inconsistent."""


class BrokerUnavailable(StreamLatticeError):
    """No Kafka broker answered at the bootstrap address."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        hint = "start one with `streamlattice broker start`, or pass --bootstrap / STREAMLATTICE_BOOTSTRAP"
        msg = f"Kafka broker at {bootstrap} unreachable ({hint})"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.bootstrap = bootstrap


class AuthenticationFailed(StreamLatticeError):
    """The cluster refused the client's credentials."""


class NotAuthorized(StreamLatticeError):
    """The cluster's ACLs do not let this principal do what it asked."""


class DevBrokerError(StreamLatticeError):
    """The local dev broker could not be installed, started or stopped."""


class RegistryUnavailable(StreamLatticeError):
    """The schema registry did not answer: nothing is wrong with the record that needed it."""


class TopicMissing(StreamLatticeError):
    """A lattice topic does not exist on the broker."""


class InvalidEvent(StreamLatticeError):
    """An event failed decoding or validation; `kind` classifies it for the DLQ."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class PayloadTooLarge(InvalidEvent):
    """An encoded event is larger than its task allows."""

    def __init__(self, reason: str) -> None:
        super().__init__("oversize", reason)


class ProducerBackpressure(StreamLatticeError):
    """A producer's bounded buffer stayed full: the cluster is not acknowledging fast enough."""


class InferenceTimeout(StreamLatticeError, TimeoutError):
    """No result arrived for a request within its timeout."""


class DeadLettered(StreamLatticeError):
    """A request's event was dead-lettered by the worker: `kind` and `reason` say why."""

    def __init__(self, event_id: str, kind: str, reason: str) -> None:
        super().__init__(f"event {event_id} was dead-lettered ({kind}): {reason}")
        self.event_id, self.kind, self.reason = event_id, kind, reason
