"""`ferry serve`: flags mirror the settings (`kafka_bootstrap` → `--kafka-bootstrap`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import structlog

from sidecar import failpoints
from sidecar.app import FerryApp
from sidecar.config import Settings, load_settings
from sidecar.errors import ConfigError
from sidecar.observability.logging import configure_logging

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description="Ferry: Kafka for any language")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sidecar")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "FERRY_" + name.upper()
        if field.annotation is bool:
            serve.add_argument(
                flag,
                dest=name,
                action="store_true",
                default=None,
                help=f"{field.description} (env {env})",
            )
        else:
            serve.add_argument(
                flag,
                dest=name,
                default=None,
                metavar="VALUE",
                help=f"{field.description} (env {env}, default {field.default})",
            )
    return parser


async def _serve(settings: Settings) -> None:
    app = await FerryApp.start(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=signum)
            os._exit(128 + signum)  # the log is durable at every commit: nothing acked is lost
        log.info("signal_received", signal=signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
    await app.drain()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k != "command" and v is not None
    }
    try:
        settings = load_settings(**overrides)
        failpoints.arm_from_env()
    except ConfigError as exc:
        print(f"ferry: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:
        log.error("cannot_start", error=str(exc))
        return 2
    return 0
