"""`convmesh up|down|status|scale`: the whole mesh (broker, topics, five services)."""

from __future__ import annotations

import argparse
import time
from urllib.parse import quote

from ops import broker, mesh
from ops.commands.common import add_data_dir, print_json, settings_from
from shared.runtime.settings import SERVICES, Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up", help="start the broker if needed, apply topics, start every service; wait ready"
    )
    add_data_dir(up)
    up.add_argument("--workers", type=int, default=1, help="workers per service (default 1)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for ready")
    up.set_defaults(func=_up)

    down = subparsers.add_parser("down", help="stop what `up` started (services, then broker)")
    add_data_dir(down)
    down.add_argument(
        "--purge",
        action="store_true",
        help="also stop the local broker and delete the data dir (not the jar cache)",
    )
    down.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    down.set_defaults(func=_down)

    status = subparsers.add_parser("status", help="broker and per-worker state")
    add_data_dir(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    scale = subparsers.add_parser(
        "scale", help="start or stop workers of one service while data flows; wait ready"
    )
    add_data_dir(scale)
    scale.add_argument("service", choices=SERVICES, help="the service to scale")
    scale.add_argument("workers", type=int, help="how many workers it should run (1-10)")
    scale.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for ready")
    scale.set_defaults(func=_scale)


def _up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    started = time.monotonic()
    report = mesh.up(settings, workers=args.workers, timeout_s=args.timeout)
    print(
        f"topics: {len(report.created)} created, {len(report.unchanged)} existing, "
        f"{len(report.drift)} drifted"
    )
    print(f"mesh ready in {time.monotonic() - started:.1f} s (data dir {settings.data_dir})")
    return 0


def _scale(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    started = time.monotonic()
    result = mesh.scale(settings, args.service, args.workers, timeout_s=args.timeout)
    print(
        f"{args.service}: {args.workers} worker(s) ready in {time.monotonic() - started:.1f} s "
        f"(started {result['started']}, stopped {result['stopped']})"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    result = mesh.down(settings, purge=args.purge, timeout_s=args.timeout)
    print(
        f"stopped {result['workers_stopped']} worker(s)"
        + (f", {result['killed']} killed after the timeout" if result["killed"] else "")
        + (", broker stopped" if result["broker_stopped"] else "")
        + (f", deleted {settings.data_dir}" if result["purged"] else "")
    )
    return 0


def console_url(settings: Settings) -> str:
    """The operator console (served by aggregate worker 0), its token in the fragment.

    A fragment never reaches a server or its logs; the page moves the token
    into an Authorization header.
    """
    base = mesh.worker_url(settings, "aggregate", 0)
    return f"{base}/console#token={quote(settings.active_operator_token, safe='')}"


def status_doc(settings: Settings) -> dict[str, object]:
    return {
        "broker": broker.status(settings).as_dict(),
        "services": [w.as_dict() for w in mesh.status(settings)],
        "console_url": console_url(settings),
    }


def print_status(settings: Settings) -> dict[str, object]:
    doc = status_doc(settings)
    b = doc["broker"]
    pid = f" pid={b['pid']}" if b["pid"] else ""
    print(
        f"broker    {b['state']}{pid} {b['bootstrap']} "
        f"{'answers' if b['reachable'] else 'does not answer'}"
    )
    for w in doc["services"]:
        ready = "ready" if w["ready"] else "not ready"
        pid = w["pid"] if w["pid"] else "-"
        print(
            f"{w['name'] + '-' + str(w['worker']):<18} {w['state']:<8} pid={pid:<7} "
            f"{w['url']}  {ready}"
        )
    print(f"console   {doc['console_url']}")
    return doc


def _status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.json:
        doc = status_doc(settings)
        print_json(doc)
    else:
        doc = print_status(settings)
    services = doc["services"]
    return 0 if all(w["ready"] for w in services) else 3
