"""The API and admin key checks, on an `Authorization` value from any transport (an HTTP header, gRPC
metadata), so both refuse with the same status and message."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.settings import Settings


def _bearer_matches(authorization: str | None, key: SecretStr) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), key.get_secret_value().encode()
    )


def check_api_key(settings: Settings, authorization: str | None) -> None:
    """When MNIST_API_KEY is set, predict/infer calls need `Authorization: Bearer <key>`."""
    key = settings.api_key
    if key is not None and not _bearer_matches(authorization, key):
        raise Unauthorized("missing or invalid API key (Authorization: Bearer <key>)")


def check_admin_key(settings: Settings, authorization: str | None) -> None:
    """The model repository calls change what is served: closed unless MNIST_ADMIN_KEY is set, and then
    they need `Authorization: Bearer <admin key>`."""
    key = settings.admin_key
    if key is None:
        raise Forbidden("the model repository API is disabled: set MNIST_ADMIN_KEY to enable it")
    if not _bearer_matches(authorization, key):
        raise Unauthorized("missing or invalid admin key (Authorization: Bearer <MNIST_ADMIN_KEY>)")
