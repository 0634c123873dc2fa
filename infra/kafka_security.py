"""How the services talk to Kafka when it is not the embedded broker (issue 11 item 7): SASL/SCRAM over TLS
(``SASL_SSL``), or mutual TLS (``SSL`` with a client certificate), from the environment only:

    KAFKA_SECURITY_PROTOCOL          PLAINTEXT (default; the embedded broker), SSL, SASL_SSL or SASL_PLAINTEXT
    KAFKA_SASL_MECHANISM             SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN
    KAFKA_SASL_USERNAME / _PASSWORD  the service's SCRAM user (a secret: from the environment, never a file in git)
    KAFKA_SSL_CA_LOCATION            the CA that signed the brokers' certificates (PEM)
    KAFKA_SSL_CERTIFICATE_LOCATION   this client's certificate (PEM; mTLS)
    KAFKA_SSL_KEY_LOCATION           its key (PEM; mTLS)

``librdkafka()`` gives the confluent-kafka settings (every Producer, Consumer and AdminClient merges them),
``aiokafka()`` the aiokafka/Faust ones. A half-given setup (SASL without a user, a certificate without its key) is
refused at start with what is missing (a pydantic ValidationError, a ValueError, naming the variables)."""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSecurityError(ValueError):
    pass


class KafkaSecurity(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = Field(default="", repr=False)
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise KafkaSecurityError(f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs KAFKA_SASL_USERNAME and "
                                     "KAFKA_SASL_PASSWORD (the service's SCRAM user); set both in the environment")
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise KafkaSecurityError("SASL PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the password in clear; "
                                     "use SASL_SSL, or a SCRAM mechanism")
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise KafkaSecurityError("KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (mTLS): "
                                     "set both or neither")
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def librdkafka(self) -> dict[str, Any]:
        """Settings for confluent-kafka clients (empty for PLAINTEXT, so the embedded broker's configs do not change)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        cfg: dict[str, Any] = {"security.protocol": self.security_protocol.lower()}
        if self.sasl:
            cfg.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                        "sasl.password": self.sasl_password})
        if self.tls:
            cfg["ssl.endpoint.identification.algorithm"] = "https"  # the broker's certificate must name its host
            for key, value in (("ssl.ca.location", self.ssl_ca_location),
                               ("ssl.certificate.location", self.ssl_certificate_location),
                               ("ssl.key.location", self.ssl_key_location)):
                if value:
                    cfg[key] = value
        return cfg

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ssl_ca_location or None)
        if self.ssl_certificate_location:
            ctx.load_cert_chain(self.ssl_certificate_location, self.ssl_key_location)
        return ctx

    def aiokafka(self) -> dict[str, Any]:
        """Settings for aiokafka clients (and so Faust's): security_protocol, sasl_*, ssl_context."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        cfg: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            cfg.update({"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_username,
                        "sasl_plain_password": self.sasl_password})
        if self.tls:
            cfg["ssl_context"] = self.ssl_context()
        return cfg

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust
        from faust.types.auth import SASLMechanism

        if self.sasl:
            mechanism = SASLMechanism(self.sasl_mechanism)
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password, mechanism=mechanism,
                                         ssl_context=self.ssl_context())
        return faust.SSLCredentials(self.ssl_context())


@lru_cache(maxsize=1)
def kafka_security() -> KafkaSecurity:
    """The process's Kafka security settings, read once from the environment."""
    return KafkaSecurity()


def secured(cfg: dict[str, Any]) -> dict[str, Any]:
    """*cfg* (a confluent-kafka client config) with the environment's security settings merged in."""
    return {**cfg, **kafka_security().librdkafka()}
