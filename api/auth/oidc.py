"""OpenID Connect bearer tokens (e.g. from Keycloak): signature checked against the issuer's JWKS, then issuer,
audience and expiry; the role comes from a configurable claim (Keycloak: ``realm_access.roles``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from api.auth.store import Identity

log = logging.getLogger("plietsch.api.auth")
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
REFETCH_AFTER_S = 30.0  # an unknown key id refetches the JWKS, at most this often (keys rotate; nobody may flood the issuer)


class TokenError(Exception):
    """A token that does not prove who sent it; the message says what was wrong."""


class IssuerUnavailable(TokenError):
    """The issuer's keys cannot be read (not the caller's fault: answered 503, try again)."""


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, roles_claim: str = "realm_access.roles", jwks_url: str | None = None,
                 leeway_s: int = 30) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.roles_claim = roles_claim.split(".")
        self.jwks_url = jwks_url
        self.leeway_s = leeway_s
        self.refetch_after_s = REFETCH_AFTER_S
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _discover(self) -> str:
        if self.jwks_url:
            return self.jwks_url
        url = f"{self.issuer}/.well-known/openid-configuration"
        doc = httpx.get(url, timeout=10).raise_for_status().json()
        if doc.get("issuer", "").rstrip("/") != self.issuer:
            raise TokenError(f"the discovery document at {url} names issuer {doc.get('issuer')!r}, not {self.issuer!r}")
        self.jwks_url = str(doc["jwks_uri"])
        return self.jwks_url

    def _keyset(self, refresh: bool) -> KeySet:
        with self._lock:
            if self._keys is None or (refresh and time.monotonic() - self._fetched > self.refetch_after_s):
                try:
                    url = self._discover()
                    self._keys = KeySet.import_key_set(httpx.get(url, timeout=10).raise_for_status().json())
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    if self._keys is None:
                        raise IssuerUnavailable(f"cannot read the signing keys of issuer {self.issuer}: {exc}") from None
                    log.warning("cannot refresh the signing keys of issuer %s (%s); using the ones read before", self.issuer, exc)
                self._fetched = time.monotonic()
            return self._keys

    def verify(self, token: str) -> Identity:
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError) as exc:
            raise TokenError(f"the bearer token is not a JWT ({exc})") from None
        keys = self._keyset(refresh=False)
        if header.get("kid") and not _has_kid(keys, str(header["kid"])):
            keys = self._keyset(refresh=True)  # the issuer may have rotated its keys
        try:
            tok = jwt.decode(token, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise TokenError(f"the token's signature does not verify against the keys of {self.issuer} ({exc})") from None
        claims: dict[str, Any] = tok.claims
        registry = jwt.JWTClaimsRegistry(leeway=self.leeway_s, iss={"essential": True, "value": self.issuer},
                                         aud={"essential": True, "value": self.audience}, exp={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise TokenError(f"the token was refused: {exc} (issuer {self.issuer}, audience {self.audience})") from None
        roles: Any = claims
        for part in self.roles_claim:
            roles = roles.get(part) if isinstance(roles, dict) else None
        roles = roles if isinstance(roles, list) else []
        role = "operator" if "operator" in roles else "planner" if "planner" in roles else None
        if role is None:
            raise TokenError(f"the token carries neither role 'planner' nor 'operator' in claim {'.'.join(self.roles_claim)}")
        return Identity(str(claims.get("preferred_username") or claims.get("sub") or "?"), role)


def _has_kid(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except (JoseError, ValueError, KeyError):
        return False
    return True
