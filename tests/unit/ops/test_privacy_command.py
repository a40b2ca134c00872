"""`convmesh privacy` (ops/commands/privacy.py): arguments and help."""

import pytest

from ops import cli


def test_release_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["privacy", "release", "--help"])
    assert "convmesh privacy release --before 2026-11-27" in capsys.readouterr().out


def test_budget_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["privacy", "budget", "--help"])
    assert "convmesh privacy budget --ad-account" in capsys.readouterr().out


def test_release_refuses_a_malformed_date(capsys):
    assert cli.main(["privacy", "release", "--before", "27/11/2026"]) == 1
    assert "--before must be a date" in capsys.readouterr().err
