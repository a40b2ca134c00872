"""Keyed pseudonyms: user ids leave the pipeline only in this form."""

from __future__ import annotations

import hashlib
import hmac


def pseudonym(user_id: str, keys: tuple[tuple[str, str], ...]) -> str:
    """HMAC-SHA256 of the user id under the newest key, prefixed with the key id.

    The key id lets consumers tell pseudonyms of different key generations
    apart after a rotation (CONVMESH_PSEUDONYM_KEYS lists the newest first).
    """
    kid, secret = keys[0]
    digest = hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
    return f"{kid}.{digest[:32]}"
