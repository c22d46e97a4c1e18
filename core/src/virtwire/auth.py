"""JWT verification, the authenticated principal and permission checks."""

from __future__ import annotations

import fnmatch
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt

from .config import AuthConfig, Settings
from .errors import ConfigError, ErrorCode, VirtwireError

#: Scopes the core and the bundled plugins check.
SCOPES = (
    "vm:read",
    "vm:control",
    "console",
    "console:share",
    "logs:read",
    "monitor:read",
    "metrics:read",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection: ``sub`` → ``user_id``, ``scope`` → ``scopes``, ``vms`` claim."""

    user_id: str
    scopes: frozenset[str]
    vms: tuple[str, ...] | None = None
    expires_at: float | None = None
    #: The token's own claims (those other than the registered ones the other fields
    #: represent or the verification checked).
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_scope(self, scope: str | None) -> bool:
        return scope is None or scope in self.scopes

    def can_see(self, vm_id: str) -> bool:
        """True if the ``vms`` claim (glob patterns) admits ``vm_id`` (no claim: all VMs)."""
        if self.vms is None:
            return True
        return any(fnmatch.fnmatchcase(vm_id, pattern) for pattern in self.vms)


class Authenticator:
    """Verifies tokens with the configured key and algorithms; mints tokens for the CLI."""

    def __init__(self, settings: Settings) -> None:
        self.config: AuthConfig = settings.auth
        self._verify_key: Any
        self._sign_key: Any = None
        if self.config.public_key_file:
            self._verify_key = _read_key(self.config.public_key_file, "auth.public_key_file")
            if self.config.private_key_file:
                self._sign_key = _read_key(self.config.private_key_file, "auth.private_key_file")
        else:
            self._verify_key = settings.resolved_secret
            self._sign_key = settings.resolved_secret
        required = ["sub"] + (["exp"] if self.config.require_exp else [])
        self._options: Any = {"require": required}

    def verify(self, token: str) -> Principal:
        """Return the principal for ``token`` or raise ``VirtwireError`` (AUTH_FAILED,
        TOKEN_EXPIRED). The message never contains the token."""
        if not isinstance(token, str) or not token:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "empty token")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise VirtwireError(ErrorCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.InvalidAlgorithmError:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "token algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "signature verification failed") from None
        except jwt.InvalidAudienceError:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "wrong audience") from None
        except jwt.InvalidIssuerError:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise VirtwireError(
                ErrorCode.AUTH_FAILED, f"missing required claim {exc.claim!r}"
            ) from None
        except jwt.ImmatureSignatureError:
            raise VirtwireError(ErrorCode.AUTH_FAILED, "token not yet valid") from None
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            reason = type(exc).__name__
            if isinstance(exc, jwt.DecodeError):
                reason = "malformed token"
            raise VirtwireError(ErrorCode.AUTH_FAILED, reason) from None
        _check_numeric_dates(claims)
        return principal_from_claims(claims)

    def mint(
        self,
        sub: str,
        scopes: list[str] | tuple[str, ...] = SCOPES,
        *,
        ttl: float | None = 3600.0,
        vms: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Sign a token with the configured key (needs ``private_key_file`` for RS/ES)."""
        if self._sign_key is None:
            raise ConfigError(
                "cannot mint tokens: set auth.private_key_file (public-key algorithms) "
                "or auth.secret"
            )
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "scope": " ".join(scopes), "iat": now}
        if ttl is not None:
            claims["exp"] = now + int(ttl)
        if vms is not None:
            claims["vms"] = list(vms)
        if self.config.audience:
            claims["aud"] = self.config.audience
        if self.config.issuer:
            claims["iss"] = self.config.issuer
        claims.update(extra or {})
        return jwt.encode(claims, self._sign_key, algorithm=self.config.algorithms[0])


_DATE_CLAIMS = ("exp", "nbf", "iat")


def _check_numeric_dates(claims: Any) -> None:
    """RFC 7519 NumericDate: ``exp``, ``nbf`` and ``iat`` are JSON numbers. A numeric
    string would pass the library's checks but never expire a live connection."""
    if not isinstance(claims, dict):
        raise VirtwireError(ErrorCode.AUTH_FAILED, "malformed token")
    for name in _DATE_CLAIMS:
        value = claims.get(name)
        if value is None and name not in claims:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VirtwireError(ErrorCode.AUTH_FAILED, f"claim {name!r} must be a NumericDate")
        if value != value or value in (float("inf"), float("-inf")):
            raise VirtwireError(ErrorCode.AUTH_FAILED, f"claim {name!r} must be a NumericDate")


#: Registered claims: represented by the Principal's fields or checked at verification.
_REGISTERED = frozenset({"sub", "scope", "vms", "exp", "nbf", "iat", "iss", "aud", "jti"})
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})
#: Scope sets and vms tuples shared by every principal that has the same (bounded).
_interned: dict[Any, Any] = {}


def _intern(value: Any) -> Any:
    if len(_interned) >= 4096:
        return _interned.get(value, value)
    return _interned.setdefault(value, value)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise VirtwireError(ErrorCode.AUTH_FAILED, "claim 'sub' must be a non-empty string")
    scope = claims.get("scope", "")
    if isinstance(scope, list):
        scopes = frozenset(str(s) for s in scope)
    elif isinstance(scope, str):
        scopes = frozenset(scope.split())
    else:
        raise VirtwireError(ErrorCode.AUTH_FAILED, "claim 'scope' must be a string")
    vms = claims.get("vms")
    if vms is not None and not (isinstance(vms, list) and all(isinstance(v, str) for v in vms)):
        raise VirtwireError(ErrorCode.AUTH_FAILED, "claim 'vms' must be a list of patterns")
    exp = claims.get("exp")
    own = {k: v for k, v in claims.items() if k not in _REGISTERED}
    return Principal(
        user_id=sys.intern(sub),
        scopes=_intern(scopes),
        vms=_intern(tuple(vms)) if vms is not None else None,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        claims=own or _NO_CLAIMS,
    )


def _read_key(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
