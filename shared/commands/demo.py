"""`convmesh demo`: bring the mesh up on this machine and show its status.

`make demo` runs `convmesh down --purge` first, then this. Later steps of the
demo (a workload, a summary of the results) belong in ``run_demo`` after the
mesh is up.
"""

from __future__ import annotations

import argparse

from shared import mesh
from shared.commands.common import add_data_dir, settings_from
from shared.commands.mesh import print_status


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="start the mesh and show its status")
    add_data_dir(parser)
    parser.add_argument("--workers", type=int, default=1, help="workers per service (default 1)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    mesh.up(settings, workers=args.workers)
    print_status(settings)
    return 0
