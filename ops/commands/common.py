"""Helpers shared by the command modules (not a command itself)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from shared.runtime.settings import Settings


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where broker data, worker state, logs and pid files live "
        "(default: CONVMESH_DATA_DIR or ./var)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --data-dir (if given) taking precedence."""
    settings = Settings.from_env()
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        settings = dataclasses.replace(settings, data_dir=Path(data_dir).resolve())
    return settings


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False, default=str))
