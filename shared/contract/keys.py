"""Keys of the contract: the conversion key with its scope; and the internal
identifiers: the keyed forms (HMAC-SHA256 under CONVMESH_IDENTIFIER_KEY) in which
ip_ua hashes, click ids and user ids travel and are stored inside the pipeline."""

from __future__ import annotations

import hashlib
import hmac


def scope_of(action_source: str) -> str:
    """``offline`` events are deduplicated only among themselves; the rest are ``online``."""
    return "offline" if action_source == "offline" else "online"


def conversion_key(ad_account_id: str, event_name: str, event_id: str, scope: str) -> str:
    """``"{ad_account_id}:{event_name}:{event_id}:{scope}"`` (the deduplication key)."""
    return f"{ad_account_id}:{event_name}:{event_id}:{scope}"


def ad_account_of(conversion_key: str) -> str:
    """The ad account of a conversion key (ad account ids are digits: no colon)."""
    return conversion_key.split(":", 1)[0]


def ip_ua_hash(client_ip_address: str, client_user_agent: str) -> str:
    """``sha256(client_ip_address + "|" + client_user_agent)``, lower-case hex.

    UTF-8, with lone surrogates (valid in JSON text, not in UTF-8) passed
    through, so that every decodable input hashes instead of raising.
    """
    data = f"{client_ip_address}|{client_user_agent}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def keyed_ip_ua(ip_ua: str, key: str) -> str:
    """The ``ip_ua`` identifier inside the pipeline: HMAC-SHA256 of the contract's hash.

    The unkeyed ``sha256(ip|ua)`` can be brute-forced (IPv4 space times common
    user agents); internal topics and tables hold only this keyed form. The
    conversion's hash and the identity signal's key go through the same HMAC,
    so matching is unchanged.
    """
    return hmac.new(key.encode(), ip_ua.encode(), hashlib.sha256).hexdigest()


#: Domain prefixes: a click id and a user id with the same text get unrelated
#: internal ids (and neither collides with a keyed ip_ua).
_USER_DOMAIN = "user\x1f"
_CLICK_DOMAIN = "click\x1f"
_DELETION_DOMAIN = "deleted\x1f"
_LANE_DOMAIN = "lane\x1f"


def _keyed(domain: str, value: str, key: str) -> str:
    # surrogatepass: a lone surrogate (valid in JSON text) must hash, not raise.
    data = (domain + value).encode("utf-8", "surrogatepass")
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def internal_user(user_id: str, key: str) -> str:
    """The user id inside the pipeline: ``"u." + HMAC-SHA256(key, "user\\x1f" + user_id)``.

    Every service replaces a raw user id by this at its entry point, before
    anything is stored or sent: tables, internal topics and changelogs hold no
    raw user id. Pseudonyms (``match.user``) are computed from it.
    """
    return "u." + _keyed(_USER_DOMAIN, user_id, key)


def internal_click(click_id: str, key: str) -> str:
    """The click id inside the pipeline: ``"c." + HMAC-SHA256(key, "click\\x1f" + click_id)``.

    Ingest keys a conversion's click id and identity_match a click
    engagement's by the same function, so matching is unchanged.
    """
    return "c." + _keyed(_CLICK_DOMAIN, click_id, key)


def deletion_marker(user_id: str, key: str) -> str:
    """Where a deleted user is remembered: ``"d." + HMAC-SHA256(key, "deleted\\x1f" + user_id)``.

    Keyed, and in its own domain, so it can neither be computed from the id
    without the key nor linked to the id's short hash in the logs.
    """
    return "d." + _keyed(_DELETION_DOMAIN, user_id, key)


def lane_user(ad_account_id: str, user_id: str, key: str) -> str:
    """The protected lane's unit: one user within one ad account, ``"l." + HMAC``.

    The lane bounds what one user contributes to a release. ``match.user``
    changes when its keys rotate, so the lane counts users by this instead: it
    is keyed by the identifier key, which never rotates (the internal ids
    hang on it), and scoped by the account, so no two accounts' reports share it.
    """
    return "l." + _keyed(_LANE_DOMAIN, f"{ad_account_id}\x1f{user_id}", key)[:32]
