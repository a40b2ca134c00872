"""`convmesh broker start|stop|status`: the local single-node Kafka broker."""

from __future__ import annotations

import argparse

from ops import broker
from ops.commands.common import add_data_dir, print_json, settings_from


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="start, stop or inspect the local Kafka broker")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in (
        ("start", _start, "fetch the jars if needed, start the broker, wait until it answers"),
        ("stop", _stop, "stop the broker (SIGTERM, then SIGKILL after a timeout)"),
        ("status", _status, "show whether a broker runs and answers"),
        ("fetch", _fetch, "only download the broker jars into the cache (once)"),
    ):
        sub = actions.add_parser(name, help=text)
        add_data_dir(sub)
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(func=func)


def _show(status: broker.BrokerStatus, as_json: bool) -> None:
    if as_json:
        print_json(status.as_dict())
    else:
        pid = f" pid={status.pid}" if status.pid else ""
        answers = "answers" if status.reachable else "does not answer"
        print(f"broker {status.state}{pid} at {status.bootstrap} ({answers})")


def _start(args: argparse.Namespace) -> int:
    _show(broker.start(settings_from(args)), args.json)
    return 0


def _stop(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    stopped = broker.stop(settings)
    if args.json:
        print_json({"stopped": stopped})
    else:
        print("broker stopped" if stopped else "no broker of this data dir was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = broker.status(settings_from(args))
    _show(status, args.json)
    return 0 if status.reachable else 3


def _fetch(args: argparse.Namespace) -> int:
    libs = broker.ensure_jars(settings_from(args))
    if args.json:
        print_json({"libs": str(libs)})
    else:
        print(f"broker jars in {libs}")
    return 0
