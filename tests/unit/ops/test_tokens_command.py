"""`convmesh tokens`: argument checks before anything is written."""

from __future__ import annotations

import pytest

from ops import cli
from ops.commands import tokens


def fail_publish(*_args: object) -> None:
    raise AssertionError("nothing may be published")


def test_create_refuses_an_ad_account_with_a_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tokens, "publish_record", fail_publish)
    assert cli.main(["tokens", "create", "--ad-account", "123\n"]) == 1
    assert "1 to 18 digits" in capsys.readouterr().err


def test_create_refuses_to_run_without_a_token_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tokens, "publish_record", fail_publish)
    monkeypatch.delenv("CONVMESH_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("CONVMESH_DEV_MODE", "false")
    assert cli.main(["tokens", "create", "--ad-account", "123"]) == 1
    assert "CONVMESH_TOKEN_SECRET" in capsys.readouterr().err


def test_revoke_refuses_a_token_id_with_a_trailing_newline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["tokens", "revoke", "0123456789ab\n"]) == 1
    assert "12 hex digits" in capsys.readouterr().err
