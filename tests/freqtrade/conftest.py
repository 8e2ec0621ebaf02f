"""Fixtures for running the real Freqtrade 2026.9 offline against the replay exchange."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def ft_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a futures config for the replay server; returns its path.

    Isolated margin, order-book pricing on the other side (Binance futures has no ticker pricing
    in Freqtrade), Telegram off but with its required keys, an in-tmp sqlite database.
    """

    def make(overlay: dict[str, Any], **extra: Any) -> Path:
        exchange: dict[str, Any] = {
            "name": "binance",
            "key": "",
            "secret": "",
            "pair_whitelist": ["BTC/USDT:USDT"],
            "ccxt_config": overlay,
        }
        exchange.update(extra.pop("exchange", {}))
        cfg: dict[str, Any] = {
            "trading_mode": "futures",
            "margin_mode": "isolated",
            "stake_currency": "USDT",
            "stake_amount": 200,  # BTCUSDT's min notional is 100 USDT, Freqtrade adds 50 %
            "dry_run": True,
            "dry_run_wallet": 1000,
            "max_open_trades": 1,
            "timeframe": "1h",
            "exchange": exchange,
            "pairlists": [{"method": "StaticPairList"}],
            "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
            "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
            "order_types": {
                "entry": "market",
                "exit": "market",
                "stoploss": "market",
                "stoploss_on_exchange": False,
            },
            "telegram": {"enabled": False, "token": "", "chat_id": ""},
            "bot_name": "replay-test",
            "initial_state": "running",
            "db_url": f"sqlite:///{tmp_path / 'trades.sqlite'}",
            "user_data_dir": str(tmp_path / "ud"),
        }
        cfg.update(extra)
        (tmp_path / "ud").mkdir(exist_ok=True)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    return make
