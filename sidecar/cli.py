"""The `ferry` command.

`ferry serve` runs the sidecar; its flags mirror the settings (`kafka_bootstrap` →
`--kafka-bootstrap`). Everything it writes is a JSON line on stdout (sidecar/observability/),
from the first line on: invalid flags and settings included. Only `--help` answers in text.

`ferry parked list|release|drop` shows and settles the events Kafka refused for good (run it
while Ferry is stopped: it takes the log's lock); it answers an operator in text.

`ferry status` asks a running Ferry for its state (sidecar/status_cli.py) and prints tables,
or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import structlog

from sidecar import failpoints, lifecycle, status_cli
from sidecar.config import REPEATABLE, Settings, is_env_only, load_settings
from sidecar.errors import ConfigError
from sidecar.kafka.security import kafka_client_options, log_security_warnings
from sidecar.observability.logging import (
    asyncio_exception_handler,
    configure_logging,
    register_secrets,
    sensitive_values,
)
from sidecar.observability.stderr import StderrToJson, quiet_grpc_core
from sidecar.wal.parked import drop_parked, list_parked, release_parked
from sidecar.wal.store import DB_NAME

log = structlog.get_logger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        configure_logging()
        log.error("invalid_arguments", error=message, usage=self.format_usage().strip())
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ferry", description="Ferry: Kafka for any language")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sidecar")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "FERRY_" + name.upper()
        if is_env_only(field):
            continue
        if field.annotation is bool:
            # `--flag` alone is true; `--flag=false` turns off a setting that defaults to true.
            serve.add_argument(
                flag,
                dest=name,
                nargs="?",
                const="true",
                default=None,
                metavar="true|false",
                help=_help(f"{field.description} (env {env}, default {field.default})"),
            )
        elif name in REPEATABLE:
            serve.add_argument(
                flag,
                dest=name,
                action="append",
                default=None,
                metavar="VALUE",
                help=_help(f"{field.description} (env {env}, comma separated)"),
            )
        else:
            serve.add_argument(
                flag,
                dest=name,
                default=None,
                metavar="VALUE",
                help=_help(f"{field.description} (env {env}, default {field.default})"),
            )
    parked = commands.add_parser(
        "parked", help="list, release or drop events Kafka refused for good (Ferry stopped)"
    )
    parked.add_argument("action", choices=["list", "release", "drop"])
    parked.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("FERRY_DATA_DIR", "data")),
        help="directory of the write-ahead log (env FERRY_DATA_DIR, default data)",
    )
    parked.add_argument("--topic", default=None, help="only this topic's parked events")
    status = commands.add_parser(
        "status", help="show a running Ferry's state: log, forwarder, topics, subscriptions"
    )
    status_cli.add_arguments(status)
    return parser


def _help(text: str) -> str:
    """argparse formats help with %: a literal one (\"25% of the disk\") must be doubled."""
    return text.replace("%", "%%")


def _parked(action: str, data_dir: Path, topic: str | None) -> int:
    if not (data_dir / DB_NAME).exists():
        print(f"ferry: no write-ahead log in {data_dir}", file=sys.stderr)
        return 2
    if action == "list":
        rows = list_parked(data_dir, topic)
        print(f"{'sequence':>10}  {'topic':<30} {'bytes':>9}  {'event id':<36}  reason")
        for row in rows:
            print(
                f"{row.sequence:>10}  {row.topic:<30} {row.size:>9}  {row.event_id:<36}  "
                f"{row.reason}"
            )
        print(f"{len(rows)} parked events")
        return 0
    try:
        count = (release_parked if action == "release" else drop_parked)(data_dir, topic)
    except ConfigError as exc:
        print(f"ferry: {exc}; stop Ferry first", file=sys.stderr)
        return 2
    verb = "released (queued for Kafka again)" if action == "release" else "dropped"
    print(f"{count} parked events {verb}")
    return 0


async def _serve(settings: Settings, kafka_options: dict[str, str]) -> int:
    # Imported here, not at the top: it brings in grpc, whose C core must find the
    # environment main() prepares (quiet_grpc_core) when it starts.
    from sidecar.app import FerryApp

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(asyncio_exception_handler)
    app = await FerryApp.start(settings, kafka_options)
    stop = app.stop_requested  # set by a signal, or by a supervised thread's death

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=signum)
            os._exit(128 + signum)  # the log is durable at every commit: nothing acked is lost
        log.info("signal_received", signal=signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
    lifecycle.arm_deadline(app.budget.total_s)
    await app.drain()
    return lifecycle.EXIT_INTERNAL_ERROR if app.deaths.threads else 0


def main(argv: list[str] | None = None) -> int:
    quiet_grpc_core()  # before grpc loads; why errors stay on: sidecar/observability/stderr.py
    args = _parser().parse_args(argv)
    if args.command == "parked":
        return _parked(args.action, args.data_dir, args.topic)
    if args.command == "status":
        return status_cli.run(args)
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    try:
        settings = load_settings(**overrides)
        kafka_options = kafka_client_options(settings)  # reads the secret files
        failpoints.arm_from_env()
    except ConfigError as exc:
        configure_logging()
        log.error("invalid_configuration", error=str(exc))
        return 2
    configure_logging(settings.log_level)
    register_secrets(sensitive_values(kafka_options))
    register_secrets(t.get_secret_value() for t in settings.tokens)
    log_security_warnings(settings)
    stderr = StderrToJson().start()
    try:
        return asyncio.run(_serve(settings, kafka_options))
    except ConfigError as exc:
        log.error("cannot_start", error=str(exc))
        return 2
    finally:
        stderr.drain()  # gRPC's last words (a failed bind, say) before the exit's own line
