"""TLS and SASL/SCRAM for every client, and the principals and ACLs of a secured lattice.

A client's security comes from a TOML file named by $STREAMLATTICE_SECURITY_CONFIG (the CLI's
--security-config), which `broker start --secure` writes per principal:

    [security]
    protocol = "SASL_SSL"            # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    mechanism = "SCRAM-SHA-512"
    username = "worker"
    password = "..."
    cafile = "/path/to/ca.pem"       # the CA that signed the brokers' certificates

and each key can be overridden by $STREAMLATTICE_SECURITY_PROTOCOL, $STREAMLATTICE_SASL_MECHANISM,
$STREAMLATTICE_SASL_USERNAME, $STREAMLATTICE_SASL_PASSWORD and $STREAMLATTICE_SSL_CAFILE.
The password is never part of a repr, a log line or `status`.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlattice.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
ENV = {
    "protocol": "STREAMLATTICE_SECURITY_PROTOCOL",
    "mechanism": "STREAMLATTICE_SASL_MECHANISM",
    "username": "STREAMLATTICE_SASL_USERNAME",
    "password": "STREAMLATTICE_SASL_PASSWORD",
    "cafile": "STREAMLATTICE_SSL_CAFILE",
}
CONFIG_ENV = "STREAMLATTICE_SECURITY_CONFIG"

# The principals of a secured lattice, each with the least it needs (see lattice_acls).
PRINCIPALS = ("admin", "producer", "worker", "subscriber", "router")


@dataclass(frozen=True)
class Security:
    """How a client proves who it is and checks whom it talks to."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"security protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.protocol.startswith("SASL") and not (self.username and self.password):
            raise ConfigError(
                f"{self.protocol} needs a username and password (the [security] file of "
                f"${CONFIG_ENV}, or ${ENV['username']} and ${ENV['password']})"
            )

    @property
    def uses_sasl(self) -> bool:
        """Whether the client logs in with a user name and password."""
        return self.protocol.startswith("SASL")

    @classmethod
    def from_env(cls) -> Security:
        """From $STREAMLATTICE_SECURITY_CONFIG's file, then the single variables over it."""
        values: dict[str, Any] = {}
        path = os.environ.get(CONFIG_ENV)
        if path:
            values.update(read_file(Path(path)))
        for key, var in ENV.items():
            if os.environ.get(var):
                values[key] = os.environ[var]
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context trusting `cafile` (else the system's CAs), or None without TLS."""
        if self.protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        context.check_hostname = True
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments aiokafka clients take for this security."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.mechanism or "SCRAM-SHA-512"
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def describe(self) -> str:
        """For messages: protocol and user, never the password."""
        return f"{self.protocol} as {self.username}" if self.uses_sasl else self.protocol


def read_file(path: Path) -> dict[str, Any]:
    """The [security] table of a TOML file."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read security config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    table = raw.get("security")
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [security] table")
    unknown = set(table) - set(ENV)
    if unknown:
        raise ConfigError(f"{path}: unknown [security] keys {sorted(unknown)} (known: {sorted(ENV)})")
    return table


def write_file(path: Path, security: Security) -> None:
    """A client's [security] file, readable by its owner only (it holds a password)."""
    lines = ["[security]"]
    for key in ENV:
        value = getattr(security, key)
        if value is not None:
            lines.append(f'{key} = "{value}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("\n".join(lines) + "\n")


# ---- ACLs --------------------------------------------------------------------------------

# Kafka's enum codes (org.apache.kafka.common.acl / resource)
TOPIC, GROUP, TRANSACTIONAL_ID = 2, 3, 5
LITERAL, PREFIXED = 3, 4
READ, WRITE, DESCRIBE, ALL = 3, 4, 8, 2
ALLOW = 3


@dataclass(frozen=True)
class Acl:
    """Allow `principal` to do `operation` on a resource (a name, or a name prefix)."""

    principal: str
    resource_type: int
    name: str
    pattern: int
    operation: int


def lattice_acls(namespace: str) -> list[Acl]:
    """The least each principal needs in lattice `namespace`:

    producer writes events; worker reads events in its group and writes results, dead
    letters and heartbeats (and, exactly-once, its transactions); subscriber reads results;
    router reads heartbeats and offsets, writes plans and owns its own faust topics.
    """
    ns = namespace
    rules: list[tuple[str, int, str, int, tuple[int, ...]]] = [
        ("producer", TOPIC, f"{ns}.events.", PREFIXED, (WRITE, DESCRIBE)),
        ("worker", TOPIC, f"{ns}.events.", PREFIXED, (READ, DESCRIBE)),
        ("worker", GROUP, f"{ns}.workers.", PREFIXED, (READ, DESCRIBE)),
        ("worker", TOPIC, f"{ns}.results.", PREFIXED, (WRITE, DESCRIBE)),
        ("worker", TOPIC, f"{ns}.dlq.", PREFIXED, (WRITE, DESCRIBE)),
        ("worker", TOPIC, f"{ns}.lattice.heartbeats", LITERAL, (WRITE, DESCRIBE)),
        ("worker", TOPIC, f"{ns}.lattice.placement", LITERAL, (READ, DESCRIBE)),
        ("worker", TRANSACTIONAL_ID, f"{ns}.workers.", PREFIXED, (WRITE, DESCRIBE)),
        ("subscriber", TOPIC, f"{ns}.results.", PREFIXED, (READ, DESCRIBE)),
        ("router", TOPIC, f"{ns}.lattice.", PREFIXED, (READ, WRITE, DESCRIBE)),
        ("router", TOPIC, f"{ns}.events.", PREFIXED, (DESCRIBE,)),
        ("router", GROUP, f"{ns}.workers.", PREFIXED, (DESCRIBE,)),
        ("router", TOPIC, f"{ns}.router", PREFIXED, (ALL,)),  # faust's changelog and assignor topics
        ("router", GROUP, f"{ns}.router", PREFIXED, (ALL,)),
    ]
    return [Acl(f"User:{who}", rtype, name, pattern, op) for who, rtype, name, pattern, ops in rules for op in ops]
