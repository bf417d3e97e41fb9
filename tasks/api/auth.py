"""Bearer-token authentication for ``/v1/*`` (and ``/admin/*`` with an admin token)."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tasks.models import ApiToken


@dataclass(frozen=True)
class TokenPrincipal:
    """The caller behind a token; ``is_staff`` is true for admin tokens."""

    name: str
    is_staff: bool
    is_authenticated: bool = True
    is_active: bool = True
    pk: None = None


def find_token(key: str) -> ApiToken | None:
    """The live (unrevoked) token with clear-text ``key``, if any."""
    return ApiToken.objects.filter(key_hash=ApiToken.hash_key(key.strip()), revoked_at__isnull=True).first()


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[TokenPrincipal, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'")
        token = find_token(key)
        if token is None:
            raise exceptions.AuthenticationFailed("unknown or revoked token")
        return TokenPrincipal(token.name, token.is_admin), token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "BearerTokenAuthentication()"
