"""``liqsignal alerts``: the alert service on the command line (docs/alerts.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

from liqsignal.alerts.service import AlertService, _provider_from_settings
from liqsignal.config import AlertConfig, alert_settings
from liqsignal.exceptions import ConfigError

__all__ = ["add_alerts_arguments", "run_alerts", "setup_logging"]

logger = logging.getLogger("liqsignal.alerts.service")


def _check_sendable(cfg: AlertConfig) -> None:
    import os

    if not cfg.chat_ids:
        raise ConfigError("liqsignal.alerts.chat_ids is empty: name the chats to alert")
    if not (cfg.bot_token or os.environ.get(cfg.token_env, "").strip()):
        raise ConfigError(
            f"no Telegram bot token: set the environment variable {cfg.token_env} "
            "or liqsignal.alerts.token in an untracked config"
        )


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``liqsignal alerts``."""
    parser.add_argument("--config", required=True, help="Freqtrade-style JSON config")
    parser.add_argument("--once", action="store_true", help="one refresh and evaluation, then exit")
    parser.add_argument("--interval", type=float, help="seconds between rounds (overrides config)")
    parser.add_argument("--datadir", help="Freqtrade data folder (overrides config)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the messages on stderr (default INFO)",
    )


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with times, unless the application already set up logging (Freqtrade)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=getattr(logging, level, logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    # one line per HTTP request and per scheduler run is noise at INFO
    for name in ("httpx", "httpcore", "apscheduler", "telegram", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def run_alerts(args: argparse.Namespace) -> int:
    """``liqsignal alerts``: run until SIGINT/SIGTERM (or one round with ``--once``)."""
    setup_logging(str(getattr(args, "log_level", "INFO") or "INFO"))
    settings = alert_settings(args.config)
    changes: dict[str, Any] = {}
    if getattr(args, "interval", None):
        changes["interval_s"] = float(args.interval)
    if getattr(args, "datadir", None):
        changes["datadir"] = str(args.datadir)
    if changes:
        settings = settings.with_alerts(**changes)
    if not settings.alerts.enabled:
        logger.warning("liqsignal.alerts.enabled is false; running anyway (explicit command)")
    _check_sendable(settings.alerts)  # before any exchange client or file is created
    provider = _provider_from_settings(settings)
    service = AlertService(
        provider,
        settings.alerts,
        markets=[m.market for m in settings.markets],
        freqtrade_config=settings.freqtrade_config,
    )
    service.sender = service._build_sender()

    async def main() -> int:
        try:
            if getattr(args, "once", False):
                res = await service.tick()
                reached = bool(getattr(service.sender, "_started", True))
                print(
                    f"liqsignal alerts: {len(res.events)} event(s), {res.sent} sent, "
                    f"{res.pending} pending, {res.failed} failed"
                    + (f"; refresh failed: {res.refresh_error}" if res.refresh_error else "")
                    + ("" if reached else "; Telegram could not be reached")
                )
                if not reached:
                    print(
                        "liqsignal alerts: error: Telegram could not be reached (see the log); "
                        "unsent alerts stay in the outbox",
                        file=sys.stderr,
                    )
                ok = res.refresh_error is None and reached and not res.pending and not res.failed
                return 0 if ok else 1
            await service.run()
            return 0
        finally:
            await service.aclose()
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    return asyncio.run(main())
