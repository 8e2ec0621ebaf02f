"""``liqsignal evaluate``: the yardstick's options, its run, its table and the gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from liqsignal.exceptions import LiqsignalError
from liqsignal.sweep import add_sweep_arguments

__all__ = [
    "add_store_arguments",
    "add_yardstick_arguments",
    "print_yardstick",
    "run_yardstick",
    "store_dataset_from_args",
]


def add_store_arguments(p: Any, exchange_group: Any = None) -> None:
    """``--exchange --pair --timeframe --datadir``: score or fit a market of the user's own
    data folder (candles, open interest, funding and stored realized liquidations).
    ``exchange_group``: a mutually exclusive group that ``--exchange`` joins (``fit``)."""
    (exchange_group or p).add_argument(
        "--exchange",
        dest="store_exchange",
        metavar="EXCHANGE",
        help="a market of your data folder instead of the bundled data: its candles, open "
        "interest, funding and stored realized liquidations (with --pair, --timeframe)",
    )
    p.add_argument("--pair", help="with --exchange: the market, e.g. BTC/USDT:USDT or BTC")
    p.add_argument("--timeframe", default="1h", help="with --exchange: candle timeframe (1h)")
    p.add_argument("--datadir", default="user_data/data", help="with --exchange: data folder")


def store_dataset_from_args(args: argparse.Namespace, n_folds: int, warmup: int) -> Any:
    """The dataset ``--exchange/--pair/--timeframe/--datadir`` name, or None without
    ``--exchange``; ``LiqsignalError`` for a missing ``--pair``, for ``--data`` given too, or
    (from :func:`liqsignal.datasets.store_dataset`) for a missing file or too little data."""
    if not getattr(args, "store_exchange", None):
        return None
    from liqsignal.datasets import store_dataset
    from liqsignal.markets import normalize_market

    if getattr(args, "data", None):
        raise LiqsignalError("give either --data FILE or --exchange with --pair, not both")
    if not args.pair:
        raise LiqsignalError("--exchange needs --pair (the market, e.g. BTC/USDT:USDT)")
    return store_dataset(
        args.datadir,
        args.store_exchange,
        normalize_market(args.pair),
        args.timeframe,
        n_folds=n_folds,
        warmup=warmup,
    )


def add_yardstick_arguments(e: argparse.ArgumentParser) -> None:
    """The yardstick's options of ``liqsignal evaluate``."""
    e.add_argument(
        "--dataset",
        action="append",
        choices=("btc_1h", "btc_4h", "eth_4h"),
        help="bundled dataset to score (repeatable; default: all three)",
    )
    e.add_argument("--folds", type=int, default=3, help="walk-forward test folds per dataset")
    e.add_argument("--boot", type=int, default=200, help="block-bootstrap draws (0: none)")
    switches = {
        "--gate": "exit 1 unless the model beats move x OI on every dataset and side and its "
        "partial given all controls is positive on every fold",
        "--gate-only": "only the yardstick and gate (skip other checks)",
        "--no-structure": "skip touches, armed flags and the claims",
        "--no-fine": "build each map from its own bars, not from the finer candles a dataset "
        "carries",
        "--no-forecast": "skip the cascade forecast's walk-forward scores (docs/forecast.md)",
    }
    for flag, help_ in switches.items():
        e.add_argument(flag, action="store_true", help=help_)
    e.add_argument(
        "--forecast-plot", help="write the forecast's reliability diagram and AUC table (PNG)"
    )
    e.add_argument("--symbol", help="with --data: the file's market (default BTC/USDT:USDT)")
    add_store_arguments(e)
    add_sweep_arguments(e)


def _datasets(args: argparse.Namespace) -> list[Any]:
    from liqsignal.datasets import Dataset, load_datasets
    from liqsignal.evaluate import load_coinglass

    stored = store_dataset_from_args(args, args.folds, args.warmup)
    if stored is not None:
        return [stored]
    if getattr(args, "data", None):
        volume = None if args.no_volume else args.volume
        df = load_coinglass(args.data, volume)
        symbol = args.symbol or "BTC/USDT:USDT"
        return [Dataset(Path(args.data).stem, symbol, "1h", df, f"user file {args.data}")]
    return load_datasets(args.dataset or None)


def run_yardstick(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """Score the datasets and the gate; returns ``{"yardstick": ..., "gate": ...}``."""
    from liqsignal.realized_scale import load_realized_scale
    from liqsignal.yardstick import gate, yardstick

    for name in ("boot", "n_random"):
        v = getattr(args, name, 0)
        if v is not None and v < 0:
            raise LiqsignalError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    if args.folds < 1:
        raise LiqsignalError(f"--folds must be >= 1, got {args.folds}")
    report = yardstick(
        cfg,
        _datasets(args),
        n_folds=args.folds,
        warmup=args.warmup,
        boot=args.boot,
        structure=not args.no_structure,
        n_shift=min(args.n_random, 300),
        fine=not args.no_fine,
        realized_scale=load_realized_scale(getattr(args, "config", None)),
        jobs=getattr(args, "jobs", 1),
        scheduler=getattr(args, "scheduler", None),
    )
    verdict = gate(report)
    return {
        "yardstick": report,
        "gate": {
            "passed": verdict.passed,
            "checks": verdict.checks,
            "failures": list(verdict.failures),
            "margins": verdict.margins,
        },
    }


def run_forecast(args: argparse.Namespace) -> dict[str, Any] | None:
    """The cascade forecast's walk-forward scores on the bundled datasets (None when skipped
    or when a user's file or stored market is scored: fit it there with `liqsignal fit`)."""
    if args.no_forecast or getattr(args, "data", None) or getattr(args, "store_exchange", None):
        return None
    from liqsignal.forecast import forecast_report, plot_forecast

    rep = forecast_report(
        args.dataset or None,
        n_folds=args.folds,
        warmup=args.warmup,
        jobs=getattr(args, "jobs", 1),
        scheduler=getattr(args, "scheduler", None),
    )
    if args.forecast_plot:
        plot_forecast(rep, args.forecast_plot)
    return rep


def print_forecast(rep: dict[str, Any] | None) -> None:
    if rep is None:
        return
    from liqsignal.forecast import format_forecast_report

    print(format_forecast_report(rep))


def print_yardstick(res: dict[str, Any]) -> None:
    from liqsignal.yardstick import format_report

    print(format_report(res["yardstick"]))
    g = res["gate"]
    print(
        f"gate ({g['checks']} checks: beat move x OI on every dataset and side, partial given "
        f"all controls > 0 on every fold): {'PASSED' if g['passed'] else 'FAILED'}"
    )
    for line in g["failures"]:
        print(f"  {line}")


def dumps(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=2, default=str)
