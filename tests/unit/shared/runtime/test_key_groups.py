"""shared.runtime.key_groups: an owner's items one key each, found by the owner's prefix."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.runtime.key_groups import group_key, group_prefix, item_writes, owner_of
from shared.runtime.pipeline import groups_of

owners = st.text(alphabet="0123456789abcdef.u", min_size=1)


@given(owners, st.text())
def test_an_items_key_starts_with_its_owners_prefix_and_gives_the_owner_back(
    owner: str, item: str
) -> None:
    """Whatever the item holds (``|`` too)."""
    key = group_key(owner, item)
    assert key.startswith(group_prefix(owner))
    assert owner_of(key) == owner
    assert groups_of(key.encode())[0] == group_prefix(owner).encode()


@given(owners, owners, st.text())
def test_another_owners_keys_do_not_start_with_the_prefix(a: str, b: str, item: str) -> None:
    if a != b:
        assert not group_key(b, item).startswith(group_prefix(a))


def test_item_writes_put_new_changed_and_asked_items_and_delete_only_items_read() -> None:
    writes = item_writes(
        {"same": 1, "changed": 1, "gone": 1, "asked": 1},
        {"same": 1, "changed": 2, "asked": 1, "new": 3, "unread": 4},
        again={"asked"},
        encode=str,
    )
    assert writes.puts == {"changed": "2", "asked": "1", "new": "3", "unread": "4"}
    assert writes.deletes == ("gone",)
