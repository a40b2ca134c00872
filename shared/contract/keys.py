"""Keys of the contract: the conversion key with its scope, and the ip_ua key."""

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
