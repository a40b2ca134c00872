"""Keys of the contract (shared/contract/keys.py)."""

from __future__ import annotations

import hashlib

from shared.contract import keys as ids


def test_ip_ua_hash_is_sha256_of_ip_bar_ua_unchanged() -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64)"
    assert (
        ids.ip_ua_hash("203.0.113.7", ua)
        == hashlib.sha256(f"203.0.113.7|{ua}".encode()).hexdigest()
    )
    assert ids.ip_ua_hash("203.0.113.7", ua) != ids.ip_ua_hash("203.0.113.7", ua.lower())
    assert ids.ip_ua_hash("a|b", "c") == ids.ip_ua_hash("a", "b|c")  # the documented formula


def test_ip_ua_hash_of_a_lone_surrogate_does_not_raise() -> None:
    assert len(ids.ip_ua_hash("203.0.113.7", "agent \ud800")) == 64


def test_conversion_key_and_scope() -> None:
    assert ids.scope_of("offline") == "offline"
    assert ids.scope_of("web") == ids.scope_of("app_ios") == "online"
    assert ids.conversion_key("1", "lead", "e-1", "online") == "1:lead:e-1:online"


def test_ad_account_of_a_conversion_key_even_when_the_event_id_has_colons() -> None:
    assert ids.ad_account_of(ids.conversion_key("549755885175", "lead", "a:b", "online")) == (
        "549755885175"
    )


def test_keyed_ip_ua_depends_on_the_key_and_hides_the_hash() -> None:
    plain = ids.ip_ua_hash("203.0.113.7", "Mozilla/5.0")
    one, two = ids.keyed_ip_ua(plain, "k" * 32), ids.keyed_ip_ua(plain, "j" * 32)
    assert one != two and plain not in (one, two) and len(one) == 64
    assert ids.keyed_ip_ua(plain, "k" * 32) == one  # deterministic: matching still works


def test_internal_user_is_keyed_deterministic_and_hides_the_id() -> None:
    one = ids.internal_user("user-000123", "k" * 32)
    assert one == ids.internal_user("user-000123", "k" * 32)
    assert one != ids.internal_user("user-000123", "j" * 32)
    assert one.startswith("u.") and len(one) == 66 and "user-000123" not in one


def test_internal_click_is_keyed_and_prefixed() -> None:
    one = ids.internal_click("clk-42", "k" * 32)
    assert one == ids.internal_click("clk-42", "k" * 32)
    assert one != ids.internal_click("clk-42", "j" * 32)
    assert one.startswith("c.") and "clk-42" not in one


def test_a_click_id_and_a_user_id_of_the_same_text_differ_beyond_the_prefix() -> None:
    """Domain separation: the kinds never share an internal id."""
    user, click = ids.internal_user("x1", "k" * 32), ids.internal_click("x1", "k" * 32)
    assert user[2:] != click[2:]


def test_internal_ids_hash_lone_surrogates_instead_of_raising() -> None:
    assert ids.internal_user("u\ud800", "k" * 32).startswith("u.")
    assert ids.internal_click("c\ud800", "k" * 32).startswith("c.")


def test_a_deletion_marker_is_keyed_and_neither_the_id_nor_its_plain_hash() -> None:
    """Nothing links it to the id's short hash in the logs, or computes it without the key."""
    user = ids.internal_user("user-000123", "k" * 32)
    marker = ids.deletion_marker(user, "k" * 32)
    assert marker == ids.deletion_marker(user, "k" * 32)
    assert marker != ids.deletion_marker(user, "j" * 32)
    assert marker.startswith("d.") and user[2:] not in marker
    assert hashlib.sha256(user.encode()).hexdigest()[:16] not in marker


def test_a_lane_user_is_keyed_and_scoped_by_ad_account() -> None:
    one = ids.lane_user("1", "u.abc", "k" * 32)
    assert one == ids.lane_user("1", "u.abc", "k" * 32) and one.startswith("l.")
    assert one != ids.lane_user("2", "u.abc", "k" * 32)
    assert one != ids.lane_user("1", "u.abc", "j" * 32)
