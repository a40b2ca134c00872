"""The CLI skeleton: registered commands, tolerant module list, error handling."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from ops import cli, commands
from ops.errors import MeshError


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_foundation_commands_are_registered() -> None:
    assert {"broker", "topics", "up", "down", "status", "demo"} <= subcommands(cli.build_parser())


def test_missing_command_module_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["broker", "not_written_yet"])
    names = subcommands(cli.build_parser())
    assert names == {"broker"}
    assert "not_written_yet" in capsys.readouterr().err


def test_broken_import_inside_a_command_module_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "broken_cmd.py").write_text("import convmesh_no_such_dependency\n")
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "ops.commands.broken_cmd", raising=False)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["broken_cmd"])
    with pytest.raises(ModuleNotFoundError, match="convmesh_no_such_dependency"):
        cli.build_parser()


def test_convmesh_errors_exit_1_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def up(*args: object, **kwargs: object) -> None:
        raise MeshError("port 7100 is taken")

    monkeypatch.setattr("ops.commands.mesh.mesh.up", up)
    assert cli.main(["up", "--data-dir", "/tmp/convmesh-cli-test"]) == 1
    assert "convmesh: error: port 7100 is taken" in capsys.readouterr().err


def test_topics_list_prints_every_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["topics", "list"]) == 0
    out = capsys.readouterr().out
    assert "conversions.raw" in out and "-changelog" in out


@pytest.mark.parametrize("command", ["send", "report", "dlq", "diagnostics"])
def test_advertiser_commands_show_an_example_in_their_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ops.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert f"convmesh {command} " in capsys.readouterr().out
