"""Keyed pseudonyms (shared/contract/pseudonyms.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.contract import pseudonyms as ps

K1 = ("k1", "the-first-secret-of-at-least-32-bytes")
K2 = ("k2", "the-second-secret-of-at-least-32-bytes")


def test_pseudonym_is_the_key_id_and_hmac_of_account_and_user() -> None:
    digest = hmac.new(K1[1].encode(), b"549755885175\x1fu-17", hashlib.sha256).hexdigest()
    assert ps.pseudonym("549755885175", "u-17", (K1,)) == f"k1.{digest[:32]}"


def test_the_same_user_has_another_pseudonym_in_another_account() -> None:
    assert ps.pseudonym("1", "u-17", (K1,)) != ps.pseudonym("2", "u-17", (K1,))


SCOPES = st.text(st.characters(blacklist_characters="\x1f"))


@given(SCOPES, SCOPES, st.text())
def test_account_and_user_cannot_be_shifted_into_each_other(a: str, b: str, c: str) -> None:
    """(scope, user) pairs that differ never share a message: no collision by shifting."""
    if (a, b + c) != (a + b, c):
        assert ps.pseudonym(a, b + c, (K1,)) != ps.pseudonym(a + b, c, (K1,))


def test_a_scope_with_the_separator_is_refused() -> None:
    with pytest.raises(ValueError):
        ps.pseudonym("1\x1f2", "u", (K1,))


def test_newest_key_names_the_pseudonym_and_every_key_can_be_listed() -> None:
    assert ps.pseudonym("1", "u", (K2, K1)).startswith("k2.")
    assert ps.pseudonyms("1", "u", (K2, K1)) == (
        ps.pseudonym("1", "u", (K2,)),
        ps.pseudonym("1", "u", (K1,)),
    )


def test_unscoped_pseudonyms_are_the_form_before_scoping() -> None:
    digest = hmac.new(K1[1].encode(), b"u-17", hashlib.sha256).hexdigest()
    assert ps.unscoped_pseudonyms("u-17", (K2, K1))[1] == f"k1.{digest[:32]}"
