"""Keyed pseudonyms: user ids leave the pipeline only in this form.

A pseudonym is ``"{kid}.{hex32}"``: the first 32 hex digits of
``HMAC-SHA256(secret, scope + "\\x1f" + user_id)`` under one key of
CONVMESH_PSEUDONYM_KEYS (newest first), prefixed with the key id. Inside the
pipeline ``user_id`` is the internal user id
(``shared.contract.keys.internal_user``): no raw user id reaches these
functions there.

The scope is the ad account of the record that carries the pseudonym
(``match.user``): the same user has a different pseudonym in every account, so
two advertisers cannot join their conversions on it. A pseudonym changes when
the newest key changes (rotation); ``pseudonyms`` gives a user's pseudonym
under every key in force, to find records published before a rotation.
"""

from __future__ import annotations

import hashlib
import hmac

#: Unit separator: no ad account id (digits) or user id contains it, so
#: (scope, user_id) -> message is one-to-one.
SEPARATOR = "\x1f"
#: The scope of the deleted-users registry (``privacy.deleted``): one pseudonym
#: per user across accounts. Not an ad account id (those are digits only).
DELETED_USERS_SCOPE = "privacy.deleted"

PseudonymKeys = tuple[tuple[str, str], ...]


def _under(kid: str, secret: str, message: str) -> str:
    # surrogatepass: a lone surrogate (valid in JSON text) must hash, not raise.
    data = message.encode("utf-8", "surrogatepass")
    digest = hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    return f"{kid}.{digest[:32]}"


def _message(scope: str, user_id: str) -> str:
    if SEPARATOR in scope:
        raise ValueError("a pseudonym scope must not contain the separator")
    return f"{scope}{SEPARATOR}{user_id}"


def pseudonym(scope: str, user_id: str, keys: PseudonymKeys) -> str:
    """The user's pseudonym in ``scope`` (an ad account id) under the newest key."""
    kid, secret = keys[0]
    return _under(kid, secret, _message(scope, user_id))


def pseudonyms(scope: str, user_id: str, keys: PseudonymKeys) -> tuple[str, ...]:
    """The user's pseudonym in ``scope`` under every key, newest first."""
    message = _message(scope, user_id)
    return tuple(_under(kid, secret, message) for kid, secret in keys)


def unscoped_pseudonyms(user_id: str, keys: PseudonymKeys) -> tuple[str, ...]:
    """The pseudonyms of before scoping (HMAC of the bare user id), under every key.

    Records published before pseudonyms were scoped keep this form in the
    compacted conversions.attributed until re-emitted: a deletion must still
    find them.
    """
    return tuple(_under(kid, secret, user_id) for kid, secret in keys)
