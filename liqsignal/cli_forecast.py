"""The ``liqsignal fit`` command: fit the cascade forecast and print its walk-forward report.

::

    liqsignal fit --bundled --out liqsignal/resources/forecast_model.json   # refit the default
    liqsignal fit --data my_market.csv --out model.json                     # your own data
    liqsignal fit --bundled --report                                        # the report only

``--data`` takes a CSV or Parquet file with the columns of a bundled dataset's frame: ``date,
open, high, low, close, volume, open_interest_value`` (or ``open_interest_amount``),
``realized_long_usd, realized_short_usd`` and optionally ``funding_rate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.exceptions import InputError
from liqsignal.sweep import add_sweep_arguments

__all__ = ["add_parsers", "read_user_data", "run_fit"]

_NEED = ("date", "open", "high", "low", "close", "volume", "realized_long_usd",
         "realized_short_usd")  # fmt: skip


def add_parsers(subparsers: Any) -> None:
    """Register ``fit`` on the ``liqsignal`` command's subparsers."""
    f = subparsers.add_parser(
        "fit",
        help="fit the cascade-risk forecast (bundled data or your own) and report it",
        description="Fit the per-side cascade forecast on data with realized liquidations and "
        "write it as JSON; --report prints the walk-forward scores (docs/forecast.md).",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundled", action="store_true", help="the bundled btc_1h, btc_4h, eth_4h")
    src.add_argument("--data", help="CSV or Parquet with candles, OI and realized liquidations")
    from liqsignal.cli_evaluate import add_store_arguments

    add_store_arguments(f, src)
    f.add_argument(
        "--datasets", nargs="+", metavar="NAME", help="--bundled: only these (btc_1h btc_4h eth_4h)"
    )
    f.add_argument("--symbol", default="BTC/USDT:USDT", help="--data: market symbol (ccxt)")
    f.add_argument("--name", help="--data: name recorded for the dataset (default: file stem)")
    f.add_argument("--out", help="write the model JSON here")
    f.add_argument("--config", help="JSON config with liqsignal.engine / liqsignal.forecast")
    f.add_argument("--horizon", type=int, help="bars ahead (default forecast.horizon_bars, 6)")
    f.add_argument("--target-precision", type=float, help="armed threshold's training precision")
    f.add_argument("--no-map-features", action="store_true", help="map-free features only")
    f.add_argument("--report", action="store_true", help="print the walk-forward report")
    f.add_argument("--plot", help="write the reliability diagram and AUC table to this PNG")
    f.add_argument("--folds", type=int, default=3, help="walk-forward folds of the report")
    f.add_argument("--json", action="store_true", help="print JSON")
    add_sweep_arguments(f)
    f.set_defaults(func=run_fit)


def read_user_data(path: str | Path) -> pd.DataFrame:
    """A user's file as a dataset frame; raises ``InputError`` naming the file and column."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif p.suffix.lower() == ".feather":
            df = pd.read_feather(p)
        else:
            df = pd.read_csv(p)
    except Exception as e:  # pandas raises many kinds for a bad file
        raise InputError(f"{p}: cannot be read ({type(e).__name__}: {e})") from e
    missing = [c for c in _NEED if c not in df.columns]
    if not any(c in df.columns for c in ("open_interest_value", "open_interest_amount")):
        missing.append("open_interest_value")
    if missing:
        raise InputError(
            f"{p}: missing column(s) {missing}; need {list(_NEED)} and open_interest_value "
            "(or open_interest_amount), optional funding_rate"
        )
    try:
        dates = pd.to_datetime(df["date"], utc=True)
    except (ValueError, TypeError) as e:
        raise InputError(f"{p}: column 'date' is not dates ({e})") from e
    df = df.copy()
    df["date"] = pd.DatetimeIndex(dates).as_unit("ms")
    for c in df.columns:
        if c == "date":
            continue
        if c in (*_NEED, "open_interest_value", "open_interest_amount", "funding_rate"):
            v = pd.to_numeric(df[c], errors="coerce")
            bad = v.isna() & df[c].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"{p}: column {c!r} is not numeric at row {row}: {df[c].iloc[row]!r}"
                )
            df[c] = v.astype(np.float64)
    for c in ("realized_long_usd", "realized_short_usd"):
        v = df[c].to_numpy()
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{p}: column {c!r} must be finite and >= 0, row {row}: {float(v[row])}"
            )
    return df.reset_index(drop=True)


def _config(path: str | None) -> tuple[Any, Any]:
    from liqsignal.config import ForecastConfig, MapConfig, file_settings

    if path is None:
        return MapConfig(), ForecastConfig()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON config ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    settings = file_settings(data)
    return settings.engine, settings.forecast


def run_fit(args: argparse.Namespace) -> int:
    from liqsignal import forecast as fc
    from liqsignal.features import compute_features

    if not (args.out or args.report or args.plot):
        print("liqsignal fit: give --out, --report and/or --plot", file=sys.stderr)
        return 2
    engine, fcfg = _config(args.config)
    horizon = args.horizon if args.horizon is not None else fcfg.horizon_bars
    target = args.target_precision if args.target_precision is not None else fcfg.target_precision
    use_map = not args.no_map_features
    if args.bundled:
        from liqsignal.datasets import load_datasets

        frames = [(ds.name, ds.symbol, ds.frame) for ds in load_datasets(args.datasets)]
        data = fc.market_features(frames, engine, jobs=args.jobs, scheduler=args.scheduler)
        training = fc.bundled_training(args.datasets)
        source = "liqsignal fit --bundled" + (
            f" --datasets {' '.join(args.datasets)}" if args.datasets else ""
        )
    else:
        from liqsignal.cli_evaluate import store_dataset_from_args

        stored = store_dataset_from_args(args, args.folds, 200)
        if stored is not None:  # realized NaN where unknown: those targets stay unknown
            frame, symbol, file = stored.frame, stored.symbol, stored.source
            name = args.name or stored.name
            source = (
                f"liqsignal fit --exchange {args.store_exchange} --pair {symbol} "
                f"--timeframe {args.timeframe}"
            )
        else:
            frame, symbol, file = read_user_data(args.data), args.symbol, str(args.data)
            name = args.name or Path(args.data).stem
            source = f"liqsignal fit --data {args.data}"
        feats = compute_features(frame, fc.market_config(engine, symbol))
        data = [(name, frame, feats)]
        d = frame["date"]
        training = [{"name": name, "symbol": symbol, "file": file,
                     "span": f"{d.iloc[0]:%Y-%m-%d} -> {d.iloc[-1]:%Y-%m-%d}",
                     "rows": len(frame)}]  # fmt: skip
    report = None
    if args.report or args.plot or args.out:
        report = fc.forecast_report(
            horizon=horizon, n_folds=args.folds, target_precision=target, data=data,
            map_features=use_map, jobs=args.jobs, scheduler=args.scheduler,
        )  # fmt: skip
    out: dict[str, Any] = {}
    if args.out:
        model = fc.fit_forecast(
            data, horizon=horizon, map_features=use_map, target_precision=target,
            map_config=engine, training=training, source=source, report=report,
        )  # fmt: skip
        path = model.save(args.out)
        out["model"] = str(path)
        out["threshold"] = {s: model.sides[s].threshold for s in fc.SIDES}
        out["test_precision"] = {s: model.sides[s].test_precision for s in fc.SIDES}
    if args.plot and report is not None:
        out["plot"] = str(fc.plot_forecast(report, args.plot))
    if args.json:
        if args.report and report is not None:
            out["report"] = fc.report_json(report)
        print(json.dumps(out, indent=1))
        return 0
    if args.report and report is not None:
        print(fc.format_forecast_report(report))
    if "model" in out:
        thr = ", ".join(f"{s} {v:.3f}" for s, v in out["threshold"].items())
        prec = ", ".join(
            f"{s} {'n/a' if v is None else f'{v:.3f}'}" for s, v in out["test_precision"].items()
        )
        print(f"model written to {out['model']} (armed thresholds {thr}; out-of-sample "
              f"precision of the thresholds {prec})")  # fmt: skip
    if "plot" in out:
        print(f"picture: {out['plot']}")
    return 0
