"""Metadata field types and settings that several backends share."""

import re
import ssl
from typing import Annotated

from pydantic import BeforeValidator, Field

from ottava_sidecar import backoff
from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.resources.models import parse_duration


def _seconds(value: object) -> object:
    """ "5s", "250ms", "1m30s" (as in Dapr manifests) or a plain number of seconds."""
    if isinstance(value, str) and value and not value.replace(".", "", 1).isdigit():
        return parse_duration(value).total_seconds()
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def identifier(name: str, field: str) -> str:
    """A table name from metadata, checked and quoted (it is spliced into SQL)."""
    if not IDENTIFIER.match(name):
        raise ComponentError(f"{field} {name!r} is not a valid table name (letters, digits, _; optionally schema.)")
    return ".".join(f'"{part}"' for part in name.split("."))


class RetryMetadata(ComponentMetadata):
    """How `init` retries a server that does not answer (never one that refuses the credentials)."""

    connect_attempts: int = Field(
        default=3, ge=1, alias="connectAttempts", description="Attempts to connect at start-up before giving up."
    )
    connect_backoff: Seconds = Field(
        default=0.2, gt=0, alias="connectBackoff", description="First wait between attempts; doubles each time."
    )
    connect_backoff_max: Seconds = Field(
        default=2.0, gt=0, alias="connectBackoffMax", description="Longest wait between attempts."
    )
    dial_timeout: Seconds = Field(
        default=3.0, gt=0, alias="dialTimeout", description="How long one connection attempt may take."
    )

    def connection_backoff(self) -> backoff.Backoff:
        """Waits between connection attempts, at start-up and when a consumer reconnects."""
        return backoff.Backoff(self.connect_backoff, self.connect_backoff_max)


class TlsMetadata(ComponentMetadata):
    """TLS to the server: off by default; files are PEM paths (mount them from a Secret)."""

    enable_tls: bool = Field(default=False, alias="enableTLS", description="Connect over TLS.")
    ca_cert: str = Field(default="", alias="caCert", description="CA bundle that signs the server's certificate.")
    client_cert: str = Field(default="", alias="clientCert", description="Client certificate for mutual TLS.")
    client_key: str = Field(default="", alias="clientKey", description="Key of the client certificate.")
    insecure_skip_verify: bool = Field(
        default=False, alias="insecureSkipVerify", description="Accept any server certificate (testing only)."
    )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.enable_tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_cert or None)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key or None)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
