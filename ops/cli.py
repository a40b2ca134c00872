"""The `convmesh` command line: argparse with one module per command group.

To add a command, write ``ops/commands/<name>.py`` with ``add_parser`` and
add ``<name>`` to ``COMMAND_MODULES``. A listed module that does not exist yet
(someone listed it before committing it) is skipped with a warning, so one
engineer's half-finished command never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from shared.contract.errors import ConvmeshError
from shared.runtime.logging import configure_logging
from shared.runtime.settings import Settings

COMMAND_MODULES: list[str] = [
    "broker",
    "topics",
    "mesh",  # up, down, status, scale
    "demo",
    "tokens",  # create, revoke, list (Conversions API tokens)
    "gen",  # generate a workload and produce it to the input topics
    "accounts",  # per ad account settings (attribution windows)
    "privacy",  # protected-lane releases and privacy budget
    "logs",  # a service's worker logs, -f follows
    "send",  # stream an event file to the API or conversions.raw
    "report",  # an ad account's report (advertiser API)
    "dlq",  # recent rejects grouped by reason
    "diagnostics",  # an ad account's setup diagnostics
    "bench",  # the pipeline against a chain of plain Kafka relays
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convmesh",
        description="Run and operate the convmesh conversion-measurement pipeline.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module_name = f"ops.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the module exists but one of its imports is missing: a real bug
            print(f"convmesh: warning: command module {name!r} not found", file=sys.stderr)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging("cli", 0, Settings.from_env().log_level)
        return int(args.func(args) or 0)
    except ConvmeshError as exc:
        print(f"convmesh: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
