"""The ``liqsignal`` command: demo, evaluate, calibrate, map, download, alerts, replay.

Progress bars (rich) go to stderr and only when it is a terminal, so ``--json`` output on
stdout stays clean for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liqsignal.cli_evaluate import add_store_arguments, add_yardstick_arguments
from liqsignal.cli_forecast import add_parsers as add_forecast_parsers
from liqsignal.cli_liquidations import add_parsers as add_liquidation_parsers
from liqsignal.cli_watch import add_parsers as add_watch_parsers
from liqsignal.exceptions import ConfigError, LiqsignalError
from liqsignal.markets import normalize_market
from liqsignal.sweep import add_sweep_arguments

__all__ = ["main"]


def _read_json(path: str, what: str = "--config") -> Any:
    """A JSON file, or a ConfigError that names the file and, for bad JSON, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file (give the path of a JSON file)") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{what} {path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg} "
            "(JSON allows no trailing commas or comments)"
        ) from None


def _load_engine_config(path: str | None) -> Any:
    """The engine settings of ``--config`` (``liqsignal.config.file_settings``: a Freqtrade
    config, whose whole ``liqsignal`` section is validated and resolved as the strategy and the
    alert service do it, a bare ``liqsignal`` section, or a bare engine section)."""
    from liqsignal.config import MapConfig, file_settings

    if path is None:
        return MapConfig()
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a JSON object, got {type(data).__name__}")
    return file_settings(data).engine


def _int_at_least(lo: int) -> Any:
    """An argparse type: a whole number >= ``lo``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a number >= {lo}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _utc_time(text: str) -> str:
    """An ISO 8601 time (UTC when no zone is given), e.g. 2026-03-01T00:00Z."""
    import pandas as pd

    try:
        pd.Timestamp(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"expected a time like 2026-03-01T00:00Z, got {text!r}"
        ) from None
    return text


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return v


def _fmt_usd(v: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def _cluster_rows(snap: Any, limit: int = 8) -> list[dict[str, Any]]:
    rows = []
    for side in ("long", "short"):
        for c in snap.clusters_on(side)[:limit]:
            rows.append(
                {
                    "side": side,
                    "low": round(c.low, 2),
                    "high": round(c.high, 2),
                    "price": round(c.price, 2),
                    "usd": round(c.usd, 0),
                    "distance_pct": round(c.distance_pct, 3),
                    "depth": c.depth,
                    "cascade_usd": round(c.cascade_usd, 0),
                    "shares": {k: round(v, 3) for k, v in c.shares.items()},
                }
            )
    return rows


def _print_clusters(rows: list[dict[str, Any]], price: float) -> None:
    print(f"reference price {price:,.2f}")
    print(f"{'side':<6}{'price range':>24}{'USD':>10}{'dist %':>9}{'depth':>7}{'cascade':>10}")
    for r in rows:
        rng = f"{r['low']:,.0f}-{r['high']:,.0f}"
        print(
            f"{r['side']:<6}{rng:>24}{_fmt_usd(r['usd']):>10}{r['distance_pct']:>9.2f}"
            f"{r['depth']:>7}{_fmt_usd(r['cascade_usd']):>10}"
        )


class _Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Any:
        if self._bar is None:
            return None
        return self._bar.add_task(description, total=total)

    def update(self, task: Any, completed: int, total: int | None = None) -> None:
        if self._bar is not None and task is not None:
            self._bar.update(task, completed=completed, total=total)


EVENT_COINS = ("BTC", "ETH", "SOL", "DOGE")


def _event_evaluations(args: argparse.Namespace, progress: _Progress) -> dict[str, Any]:
    """Realized Hyperliquid events against bands of a volume-proxy map on Binance candles."""
    from liqsignal.config import MapConfig
    from liqsignal.evaluate import (
        BUNDLED_EVENTS,
        REPO_DATADIR,
        evaluate_event_bands,
        load_candles,
        load_events,
    )

    path = Path(args.events) if args.events else BUNDLED_EVENTS
    cdir = Path(args.candles) if args.candles else REPO_DATADIR / "binance" / "futures"
    events = load_events(path)
    coins = [c for c in EVENT_COINS if (events["coin"].str.upper() == c).any()] or [""]
    results = []
    skipped = []
    task = progress.task("event bands", len(coins))
    for k, coin in enumerate(coins):
        try:
            bars = load_candles(cdir, coin)
        except LiqsignalError as e:
            skipped.append(f"{coin}: {e}")
            continue
        bars = bars[["date", "open", "high", "low", "close", "volume"]]
        cfg = MapConfig(
            exchange="hyperliquid",
            symbol=f"{coin}/USDT:USDT",
            step=None,
            step_bps=5.0,
            scan_range_pct=args.event_range,
        )
        mine = events[events["coin"].str.upper() == coin] if coin else events
        try:
            results.append(
                evaluate_event_bands(
                    bars,
                    mine,
                    cfg,
                    proxy=True,
                    market=coin,
                    horizon_bars=args.event_horizon,
                    n_random=args.n_random,
                )
            )
        except LiqsignalError as e:
            skipped.append(f"{coin}: {e}")
        progress.update(task, k + 1)
    usd = sum(r.events_usd for r in results)
    pooled = {
        "events_usd": usd,
        "model_share": sum(r.model_share * r.events_usd for r in results) / usd if usd else None,
        "random_share_mean": (
            sum(r.random_share_mean * r.events_usd for r in results) / usd if usd else None
        ),
    }
    return {
        "events": str(path),
        "candles": str(cdir),
        "note": (
            "volume-proxy mode: Binance 1h candles without open interest for the event window; "
            "Hyperliquid formula; event side treated as unknown (the file marks every row 'S')"
        ),
        "horizon_bars": args.event_horizon,
        "scan_range_pct": args.event_range,
        "markets": [r.to_dict() for r in results],
        "pooled": pooled,
        "skipped": skipped,
        "_objects": results,
    }


def _evaluation(args: argparse.Namespace, progress: _Progress | None = None) -> dict[str, Any]:
    from liqsignal.datasets import BUNDLED_COINGLASS, BUNDLED_VOLUME, load_coinglass
    from liqsignal.evaluate import evaluate_armed, evaluate_bars, evaluate_touches
    from liqsignal.features import compute_features

    progress = progress or _Progress(False)
    data = args.data or BUNDLED_COINGLASS
    volume = (
        None if args.no_volume else (args.volume or (BUNDLED_VOLUME if not args.data else None))
    )
    df = load_coinglass(data, volume)
    cfg = _load_engine_config(args.config)
    t0 = time.perf_counter()
    task = progress.task("evaluate", 4)
    feats = compute_features(df.drop(columns=["realized_long_usd", "realized_short_usd"]), cfg)
    assert hasattr(feats, "columns")
    res = evaluate_bars(df, features=feats, config=cfg, warmup=args.warmup)
    progress.update(task, 1)
    touches = evaluate_touches(
        df, cfg, top_k=args.top_k, horizon_bars=args.horizon, warmup=args.warmup
    )
    progress.update(task, 2)
    armed = evaluate_armed(
        df,
        feats,
        horizon_bars=args.armed_horizon,
        ratio=args.cascade_ratio,
        warmup=args.warmup,
        n_random=args.n_random,
    )
    progress.update(task, 3)
    events: dict[str, Any] | None = None
    if not args.no_events:
        events = _event_evaluations(args, progress)
    progress.update(task, 4)
    objects = {
        "bars": res,
        "touches": touches,
        "armed": armed,
        "events": events.pop("_objects") if events else [],
        "span": f"{Path(str(data)).name}: {len(df)} bars, {pd_span(df)}, first {args.warmup} "
        "skipped as warm-up",
    }
    out: dict[str, Any] = {
        "data": str(data),
        "volume": str(volume) if volume else None,
        "bars": len(df),
        "warmup": args.warmup,
        "sides": [r.to_dict() for r in res],
        "touches": [t.to_dict() for t in touches],
        "armed": {
            "cascade": (
                f"realized liquidations of a side >= {args.cascade_ratio} x their mean over the "
                "previous 168 bars (first bar of a run)"
            ),
            "sides": [a.to_dict() for a in armed],
        },
        "events": events,
    }
    if args.plot:
        from liqsignal.plot import plot_evaluation

        out["picture"] = str(plot_evaluation(objects, args.plot))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def pd_span(df: Any) -> str:
    """'2025-12-04 06:00 -> 2026-03-04 23:00 UTC' of a frame's ``date`` column."""
    d = df["date"]
    return f"{d.iloc[0]:%Y-%m-%d %H:%M} -> {d.iloc[-1]:%Y-%m-%d %H:%M} UTC"


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.{digits}f}"


def _print_evaluation(ev: dict[str, Any]) -> None:
    print(
        f"per-bar rank correlation with realized liquidations ({ev['data']}, "
        f"{ev['bars']} bars, first {ev['warmup']} skipped)"
    )
    print(f"{'side':<6}{'model':>8}{'baseline':>10}{'partial|base':>14}{'model~base':>12}")
    for s in ev["sides"]:
        print(
            f"{s['side']:<6}{s['model_spearman']:>8.3f}{s['baseline_spearman']:>10.3f}"
            f"{s['partial_given_baseline']:>14.3f}{s['model_baseline_spearman']:>12.3f}"
        )
    for t in ev.get("touches", []):
        print(
            f"touches {t['side']:<5}: top-{t['top_k']} clusters reached within "
            f"{t['horizon_bars']} bars {_f(t['model_touch_share'])} vs levels at the same "
            f"distances at any time {_f(t['random_touch_share'])} "
            f"({t['clusters']} clusters, z {_f(t['z'], 2)})"
        )
    for a in ev.get("armed", {}).get("sides", []):
        print(
            f"armed {a['side']:<5}: {a['flags']} flags, {a['cascades']} cascades; precision "
            f"{_f(a['precision'])} (random {_f(a['random_precision_mean'])}), recall "
            f"{_f(a['recall'])} (random {_f(a['random_recall_mean'])}, p {_f(a['p_value_recall'])})"
            f", median lead {_f(a['lead_bars_median'], 1)} bars"
        )
    evs = ev.get("events")
    if evs:
        for m in evs["markets"]:
            print(
                f"events {m['market']:<5}: {m['events']} events {m['events_usd'] / 1e6:.2f}M USD; "
                f"inside bands {_f(m['model_share'])} vs random bands "
                f"{_f(m['random_share_mean'])} (p95 {_f(m['random_share_p95'])}, "
                f"p {_f(m['p_value'])})"
            )
        for s in evs["skipped"]:
            print(f"events skipped: {s}")
        print(f"events: {evs['note']}")
    if ev.get("picture"):
        print(f"picture: {ev['picture']}")


def _armed_bars(df: Any, cfg: Any, warmup: int) -> dict[str, int]:
    """Bars after the warm-up on which each side is armed under ``cfg``."""
    from liqsignal.features import compute_features

    frame = df.drop(columns=[c for c in df.columns if c.startswith("realized_")])
    out = compute_features(frame, cfg)
    assert not isinstance(out, tuple)
    feats = out.iloc[max(warmup, 0) :]
    return {side: int((feats[f"liq_{side}_armed"] > 0).sum()) for side in ("long", "short")}


def _warn_never_arms(command: str, armed: dict[str, Any], config: str | None) -> None:
    """One loud line on stderr when a config never arms: the stop guard's tightening and the
    armed alerts then never fire."""
    if not armed or any(int(v or 0) > 0 for v in armed.values()):
        return
    print(
        f"liqsignal {command}: warning: the config {config or '(defaults)'} never arms on this "
        f"data (armed bars: {', '.join(f'{k} {v}' for k, v in armed.items())}): with it the "
        "stop guard never tightens and no armed alert is sent; do not use it live as it is "
        "(compare `liqsignal evaluate` with and without --config)",
        file=sys.stderr,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from liqsignal.cli_evaluate import print_yardstick, run_yardstick

    yard = run_yardstick(args, _load_engine_config(args.config))
    if args.gate_only or args.store_exchange:  # a stored market: the yardstick alone
        if args.json:
            print(json.dumps(yard, indent=2, default=str))
        else:
            print_yardstick(yard)
            if args.store_exchange:
                print(
                    "(a stored market gets the yardstick and gate; the other checks use the "
                    "bundled development file; fit its forecast with liqsignal fit --exchange)"
                )
        return 1 if args.gate and not yard["gate"]["passed"] else 0
    from liqsignal.cli_evaluate import print_forecast, run_forecast

    with _Progress(not args.json) as progress:
        ev = _evaluation(args, progress)
    ev.update(yard)
    ev["forecast"] = run_forecast(args)
    if not args.json:
        print_yardstick(yard)
        print_forecast(ev["forecast"])
        print("Other checks on the development file (btc_1h) and the Hyperliquid events:")
    sides = (ev.get("armed") or {}).get("sides") or []
    _warn_never_arms(
        "evaluate", {s.get("side", "?"): s.get("flags", 0) for s in sides}, args.config
    )
    if args.json:
        print(json.dumps(ev, indent=2, default=str))
    else:
        _print_evaluation(ev)
    return 1 if args.gate and not yard["gate"]["passed"] else 0


def _cmd_realized_scale(args: argparse.Namespace) -> int:
    """``calibrate --realized-scale``: the map's mass scaled by realized liquidations on
    crossed levels, measured against the unscaled map; writes a ``realized_scale`` section."""
    from liqsignal.calibrate import compare_realized_scale, format_realized_scale
    from liqsignal.cli_evaluate import store_dataset_from_args
    from liqsignal.datasets import Dataset, load_datasets
    from liqsignal.evaluate import load_coinglass
    from liqsignal.realized_scale import load_realized_scale

    folds = max(args.folds, 1)
    stored = store_dataset_from_args(args, folds, args.warmup)
    if stored is not None:
        dss = [stored]
    elif args.data:
        df = load_coinglass(args.data, None if args.no_volume else args.volume)
        dss = [Dataset(Path(args.data).stem, "BTC/USDT:USDT", "1h", df, f"user file {args.data}")]
    else:
        dss = load_datasets()
    res = compare_realized_scale(
        dss,
        _load_engine_config(args.config),
        load_realized_scale(args.config),
        n_folds=folds,
        warmup=args.warmup,
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    section = {"liqsignal": {"realized_scale": res["scale"]}}
    path.write_text(json.dumps(section, indent=2) + "\n", encoding="utf-8")
    res["written"] = str(path)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(format_realized_scale(res))
        print(f"config written: {path} (liqsignal evaluate --config {path} scores with it)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Walk-forward fit of the free parameters; writes a ``liqsignal.engine`` section."""
    if args.realized_scale:
        return _cmd_realized_scale(args)
    from liqsignal.calibrate import calibrate
    from liqsignal.cli_evaluate import store_dataset_from_args
    from liqsignal.datasets import BUNDLED_COINGLASS, BUNDLED_VOLUME, load_coinglass

    stored = store_dataset_from_args(args, args.folds, args.warmup)
    data: Any
    if stored is not None:
        data, df = f"{stored.name} ({stored.source})", stored.frame
    else:
        data = args.data or BUNDLED_COINGLASS
        volume = (
            None if args.no_volume else (args.volume or (None if args.data else BUNDLED_VOLUME))
        )
        df = load_coinglass(data, volume)
    cfg = _load_engine_config(args.config)
    if stored is not None:  # the grid and tiers of the stored market, as the yardstick does
        from liqsignal.yardstick import market_config

        cfg = market_config(cfg, stored.symbol, float(df["close"].iloc[0]))
    with _Progress(not args.json) as progress:
        task = progress.task("calibrate", 1)
        res = calibrate(
            df,
            cfg,
            folds=args.folds,
            warmup=args.warmup,
            progress=lambda done, total: progress.update(task, done, total),
            jobs=args.jobs,
            scheduler=args.scheduler,
        )
    out = res.to_dict()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out["config"], indent=2) + "\n", encoding="utf-8")
    out["written"] = str(path)
    out["data"] = str(data)
    out["armed_bars"] = _armed_bars(df, _load_engine_config(str(path)), args.warmup)
    _warn_never_arms("calibrate", out["armed_bars"], str(path))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(
        f"walk-forward calibration on {data} ({len(df)} bars, {res.evaluations} runs, "
        f"{res.seconds} s)"
    )
    print(
        f"{'test window':<42}{'side':<7}{'default':>9}{'fitted':>9}{'baseline':>10}"
        f"{'partial def/fit':>17}"
    )
    for f in res.folds:
        win = f"{f.test[0][:16]} .. {f.test[1][:16]}"
        for side in ("long", "short"):
            print(
                f"{win:<42}{side:<7}{f.test_default[side + '_model']:>9.3f}"
                f"{f.test_fitted[side + '_model']:>9.3f}{f.test_default[side + '_baseline']:>10.3f}"
                f"{f.test_default[side + '_partial']:>9.3f}/{f.test_fitted[side + '_partial']:.3f}"
            )
        print(f"{'':<42}fitted on {f.train[0][:16]} .. {f.train[1][:16]}: {f.fitted}")
    print(f"final fit (all rows after warm-up): {res.final}")
    print(f"config written: {path}  (MapConfig.from_dict reads its liqsignal.engine section)")
    armed = out["armed_bars"]
    print(f"armed bars with it (after the warm-up): long {armed['long']}, short {armed['short']}")
    return 0


def _eval_defaults(args: argparse.Namespace) -> None:
    for k, v in (
        ("data", None),
        ("volume", None),
        ("no_volume", False),
        ("warmup", 200),
        ("top_k", 3),
        ("horizon", 24),
        ("armed_horizon", 6),
        ("cascade_ratio", 5.0),
        ("n_random", 500),
        ("no_events", False),
        ("events", None),
        ("candles", None),
        ("event_horizon", 6),
        ("event_range", 5.0),
        ("plot", None),
    ):
        if not hasattr(args, k):
            setattr(args, k, v)


def _empty_map_warning(feats: Any) -> str | None:
    """Why the map holds no levels at its last bar, or None when it holds some.

    The default close rule removes the USD amount of an open-interest fall (plus the turnover)
    from the standing levels; the map holds only what opened since its first bar, far less than
    the open interest, so a fall larger than the map empties it."""
    if feats is None or not len(feats):
        return None
    total = (feats["liq_long_total_usd"] + feats["liq_short_total_usd"]).to_numpy()
    if total[-1] > 0:
        return None
    nz = (total > 0).nonzero()[0]
    if not nz.size:
        return "the map holds no levels: no bar added any (no rise in open interest, no volume?)"
    k = int(nz[-1]) + 1  # first bar of the empty run
    when = feats.index[k] if "date" not in feats.columns else feats["date"].iloc[k]
    closed = float(feats["liq_closed_usd"].iloc[k])
    return (
        f"the map holds no levels since {when}: that bar closed {_fmt_usd(closed)} USD "
        f"(open interest fall plus turnover), more than the {_fmt_usd(float(total[k - 1]))} "
        f"USD standing, for {len(total) - k} bar(s) to the last; the default close rule removes "
        'the USD amount of an OI fall, `"close_relative": true` in liqsignal.engine removes '
        "the same fraction instead and keeps the map"
    )


def _whole_history(cfg: Any, bars: int) -> Any:
    """The config with a heatmap history long enough for ``bars`` (the picture then starts
    where the data starts; the map's figures do not depend on it), within the engine's bound
    of 5e6 frame cells."""
    frames = min(max(int(cfg.heatmap_frames), bars + 1), 5_000_000 // int(cfg.heatmap_rows))
    return cfg.replace(heatmap_frames=frames) if frames != cfg.heatmap_frames else cfg


def _cluster_table(snap: Any, feats: Any, limit: int) -> list[dict[str, Any]]:
    rows = _cluster_rows(snap, limit=limit)
    last = feats.iloc[-1]
    first = {"long": True, "short": True}
    for r in rows:
        side = r["side"]
        r["armed"] = bool(first[side] and last[f"liq_{side}_armed"] > 0)
        r["armed_score"] = round(float(last[f"liq_{side}_armed_score"]), 3) if first[side] else None
        first[side] = False
    return rows


def _print_table(rows: list[dict[str, Any]], price: float, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: clusters around {price:,.2f}")
    for col, just in (
        ("side", "left"),
        ("price range", "right"),
        ("USD", "right"),
        ("distance %", "right"),
        ("depth", "right"),
        ("cascade USD", "right"),
        ("armed", "center"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["side"],
            f"{r['low']:,.0f} - {r['high']:,.0f}",
            _fmt_usd(r["usd"]),
            f"{r['distance_pct']:.2f}",
            str(r["depth"]),
            _fmt_usd(r["cascade_usd"]),
            ("ARMED " + str(r["armed_score"])) if r.get("armed") else "",
        )
    Console(width=110).print(table)


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the map on bundled real BTC data, print clusters, write pictures, evaluate."""
    from liqsignal.evaluate import load_coinglass
    from liqsignal.features import compute_features
    from liqsignal.plot import leverage_bucket_levels, plot_map

    t0 = time.perf_counter()
    df = load_coinglass()
    frame = df.drop(columns=["realized_long_usd", "realized_short_usd"])
    cfg = _load_engine_config(args.config)
    with _Progress(not args.json) as progress:
        task = progress.task("demo", 3)
        cfg = _whole_history(cfg, len(frame))
        feats, lmap = compute_features(frame, cfg, return_map=True)
        snap = lmap.snapshot(scan_range_pct=args.range)
        rows = _cluster_table(snap, feats, 8)
        out = Path(args.out)
        buckets, info = leverage_bucket_levels({cfg.exchange: frame}, cfg)
        for r in rows:  # one aggregated series, not one exchange: no per-exchange shares
            r.pop("shares", None)
        png = plot_map(
            lmap,
            out / "btc_liquidation_map.png",
            title="BTC/USDT:USDT 1h, bundled data (OI aggregated over Binance + Bybit + OKX)",
            buckets=buckets,
            bucket_info=info,
            armed={r["side"]: r["armed"] for r in rows if r["armed"]},
            candles=frame,
            data_start=frame["date"].iloc[0],
        )
        feats.assign(date=frame["date"]).to_csv(out / "btc_features.csv", index=False)
        progress.update(task, 1)
        _eval_defaults(args)
        args.plot = str(out / "btc_evaluation.png")
        ev = _evaluation(args, progress)
        progress.update(task, 3)
    result = {
        "bars": len(frame),
        "last_bar": str(frame["date"].iloc[-1]),
        "price": snap.price,
        "clusters": rows,
        "picture": str(png),
        "evaluation_picture": ev.get("picture"),
        "buckets": info,
        "features_csv": str(out / "btc_features.csv"),
        "evaluation": ev,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"liqsignal demo: BTC 1h, {len(frame)} bars to {frame['date'].iloc[-1]}")
    _print_table(rows, snap.price, "BTC")
    _print_evaluation(ev)
    print(f"map picture: {png}\nfeatures: {out / 'btc_features.csv'}")
    print(f"done in {result['seconds']} s")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """Clusters table and picture from stored Freqtrade-layout files (or, later, live)."""
    from liqsignal.data.provider import map_stored_market, read_stored_market
    from liqsignal.plot import leverage_bucket_levels

    if args.live:
        return _cmd_map_live(args)
    datadir = Path(args.from_data or args.datadir)
    pair = normalize_market(args.market)
    fname = pair.replace("/", "_").replace(":", "_")
    for ex in args.exchange:
        _check_stored(datadir, ex, pair, fname, args.timeframe)
    # the one stored-market path (backtests and the live provider read the same way); an
    # exchange without stored open interest runs in volume-proxy mode here
    stored = read_stored_market(pair, args.exchange, args.timeframe, datadir, missing_oi="proxy")
    stored = _from_first_oi(stored)
    frames = stored.present()
    if not frames:
        raise LiqsignalError(
            f"no candles of {pair} {args.timeframe} on {', '.join(args.exchange)} can enter "
            "the map (the stored files hold no closed candle with its open interest known)"
        )
    proxy = [ex for ex, p in zip(stored.exchanges, stored.proxies, strict=True) if p]
    cfg = _load_engine_config(args.config)
    cfg = cfg.replace(symbol=pair, exchange=args.exchange[0])
    with _Progress(not args.json) as progress:
        task = progress.task("map", 2)
        cfg = _whole_history(cfg, max(len(f) for f in frames.values()))
        feats, lmap = map_stored_market(stored, cfg)
        snap = lmap.snapshot(scan_range_pct=args.range)
        rows = _cluster_table(snap, feats, args.limit)
        empty = _empty_map_warning(feats)
        progress.update(task, 1)
        buckets, info = (
            (None, None) if args.no_buckets else leverage_bucket_levels(frames, cfg, proxy=proxy)
        )
        drawn = _draw_map(
            lmap,
            args,
            Path(args.out) / f"{fname}_{args.timeframe}_map.png",
            f"{pair} {args.timeframe} ({', '.join(frames)})",
            rows,
            candles=next(iter(frames.values())),
            buckets=buckets,
            bucket_info=info,
            data_start=min(f["date"].iloc[0] for f in frames.values()),
        )
        progress.update(task, 2)
    proxy_note = f"volume-proxy mode (no open interest stored) for: {', '.join(proxy)}"
    return _report_map(
        args,
        pair,
        list(frames),
        snap,
        rows,
        drawn,
        empty,
        extra={"volume_proxy": proxy, "buckets": info},
        notes=[proxy_note] if proxy else [],
        table_title=f"{pair} {args.timeframe} at {snap.time}",
    )


def _draw_map(
    lmap: Any,
    args: argparse.Namespace,
    path: Path,
    title: str,
    rows: list[dict[str, Any]],
    *,
    candles: Any = None,
    **plot_kwargs: Any,
) -> tuple[Path, Path | None]:
    """The map's picture at ``path`` and, with --html, its interactive page (None without);
    ``plot_kwargs`` go to the picture only."""
    from liqsignal.plot import plot_map

    armed = {r["side"]: r["armed"] for r in rows if r["armed"]}
    png = plot_map(
        lmap, path, title=title, window_pct=args.range, armed=armed, candles=candles, **plot_kwargs
    )
    page = None
    if args.html:
        from liqsignal.plot_html import write_map_html

        page = write_map_html(
            lmap, args.html, title=title, window_pct=args.range, candles=candles, armed=armed
        )
    return png, page


def _report_map(
    args: argparse.Namespace,
    market: str,
    exchanges: list[str],
    snap: Any,
    rows: list[dict[str, Any]],
    drawn: tuple[Path, Path | None],
    empty: str | None,
    *,
    extra: dict[str, Any],
    notes: list[str],
    table_title: str,
) -> int:
    """What `liqsignal map` prints: the JSON document (``extra`` after the clusters) or the
    ``notes``, the clusters table and where the picture and page are."""
    png, page = drawn
    if empty:
        print(f"liqsignal map: warning: {empty}", file=sys.stderr)
    if args.json:
        doc = {
            "market": market,
            "exchanges": exchanges,
            "timeframe": args.timeframe,
            "last_bar": str(snap.time),
            "price": snap.price,
            "clusters": rows,
            **extra,
            "picture": str(png),
            "page": str(page) if page else None,
            "warning": empty,
        }
        print(json.dumps(doc, indent=2))
    else:
        for line in notes:
            print(line)
        _print_table(rows, snap.price, table_title)
        print(f"picture: {png}")
        if page:
            print(f"interactive page: {page}")
    return 0


def _check_stored(datadir: Path, ex: str, pair: str, fname: str, timeframe: str) -> None:
    """A clear error when ``ex`` has no stored candles of ``pair``: what is there, how to
    fetch it."""
    from liqsignal.data.exchanges import EXCHANGES

    base = datadir / ex / "futures"
    if not base.is_dir():
        there_d = sorted(d.parent.name for d in datadir.glob("*/futures") if d.is_dir())
        if ex not in EXCHANGES:
            raise ConfigError(
                f"--exchange {ex}: no stored data for this exchange ({base} does not exist) "
                f"and liqsignal cannot download from it; exchanges with data in {datadir}: "
                f"{', '.join(there_d) or 'none'}; downloadable: {', '.join(EXCHANGES)}"
            )
        raise ConfigError(
            f"--exchange {ex}: no stored data for this exchange ({base} does not exist; "
            f"exchanges with data in {datadir}: {', '.join(there_d) or 'none'}); fetch it with "
            f"`liqsignal download --exchanges {ex} --markets {pair.split('/')[0]} --since 30d`"
            " or pick another --exchange"
        )
    path = base / f"{fname}-{timeframe}-futures.feather"
    if not path.is_file():
        have = sorted(
            f.name.removesuffix("-futures.feather") for f in base.glob("*-futures.feather")
        )
        raise LiqsignalError(
            f"no candles for {pair} on {ex}: {path} is missing (stored there: "
            f"{', '.join(have) or 'nothing'}); fetch it with `liqsignal download "
            f"--exchanges {ex} --markets {pair.split('/')[0]} -t {timeframe} --since 30d`"
        )


def _from_first_oi(stored: Any) -> Any:
    """The stored market with each open-interest exchange's candles starting at its first
    known OI row (the OI history may start later than the candles: the picture then starts
    where the map can start)."""
    import dataclasses

    frames = []
    for f, proxy in zip(stored.frames, stored.proxies, strict=True):
        if f is not None and not proxy and len(f):
            cols = [c for c in ("open_interest_amount", "open_interest_value") if c in f.columns]
            have = f[cols].notna().any(axis=1).to_numpy() if cols else None
            if have is not None and have.any():
                f = f.iloc[int(have.argmax()) :].reset_index(drop=True)
        frames.append(f)
    return dataclasses.replace(stored, frames=tuple(frames))


def _cmd_map_live(args: argparse.Namespace) -> int:
    """``map --live``: one refresh of a MapProvider (ccxt; fetches what the store lacks), then
    the same table and picture, with stale exchanges named."""
    import asyncio

    import pandas as pd

    from liqsignal.data.exchanges import RetryPolicy
    from liqsignal.data.provider import MapProvider, MarketSpec

    base = normalize_market(args.market).split("/")[0]
    ccxt_config: dict[str, Any] = {}
    if args.ccxt_config:
        try:
            ccxt_config = json.loads(Path(args.ccxt_config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LiqsignalError(f"--ccxt-config {args.ccxt_config}: {e}") from e
    cfg = _load_engine_config(args.config)
    if base != "BTC" and cfg.step is not None and args.config is None:
        cfg = cfg.replace(step=None, step_bps=5.0)  # the 50 USD step is for BTC
    clock = None
    if args.now:
        fixed = pd.Timestamp(args.now)
        fixed = fixed.tz_localize("UTC") if fixed.tzinfo is None else fixed.tz_convert("UTC")
        clock = lambda: fixed  # noqa: E731
    spec = MarketSpec(base, tuple(args.exchange), args.timeframe)

    async def run() -> tuple[Any, Any, Any, Any, Any]:
        provider = MapProvider(
            [spec],
            config=cfg,
            datadir=args.datadir,
            ccxt_config=ccxt_config,
            history_bars=args.history,
            clock=clock,
            retry=RetryPolicy(attempts=args.retries),
            # replayed data (--now) is older than the exchanges' own history depth
            history_limits=not args.now,
            heatmap_frames=None,  # the picture draws the heatmap: the engine config's history
        )
        try:
            report = await provider.refresh()
            return (
                report,
                provider.snapshot(base, scan_range_pct=args.range),
                provider.features(base),
                provider.status(base),
                provider.map(base),
            )
        finally:
            await provider.aclose()

    report, snap, feats, status, lmap = asyncio.run(run())
    stale = {ex: st.error or "no recent bar" for ex, st in status.items() if st.stale}
    if len(stale) == len(status):
        raise LiqsignalError(
            f"map --live: no exchange has current data for {base}: "
            + "; ".join(f"{ex}: {why}" for ex, why in stale.items())
        )
    rows = _cluster_table(snap, feats, args.limit)
    empty = _empty_map_warning(feats)
    note = f"live, stale: {', '.join(stale)}" if stale else "live"
    drawn = _draw_map(
        lmap,
        args,
        Path(args.out) / f"{base}_{args.timeframe}_live_map.png",
        f"{base} {args.timeframe} live ({', '.join(args.exchange)})",
        rows,
        note=note,
    )
    return _report_map(
        args,
        base,
        list(args.exchange),
        snap,
        rows,
        drawn,
        empty,
        extra={
            "stale": stale,
            "requests": report.requests,
            "new_bars": {f"{m}/{e}": n for (m, e), n in report.new_bars.items()},
        },
        notes=[f"stale, left out of the map: {ex} ({why})" for ex, why in stale.items()],
        table_title=f"{base} {args.timeframe} live at {snap.time}",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line: what is wrong and where the help is."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liqsignal")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown (not installed)"


def _add_command(
    sub: Any,
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """The sub-command ``name`` (``parser_kwargs`` as for ``add_parser``): its options from
    ``add_arguments``, run by ``run``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **parser_kwargs)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _add_history_arguments(parser: argparse.ArgumentParser, *, volume_help: str) -> None:
    """The aggregated history `evaluate` and `calibrate` read: the CoinGlass export, the volume
    joined to it, and the bars skipped at the start."""
    parser.add_argument("--data", help="CoinGlass 1h CSV (default: bundled BTC export)")
    parser.add_argument("--volume", help=volume_help)
    parser.add_argument("--no-volume", action="store_true", help="do not join volume")
    parser.add_argument("--warmup", type=_nonneg_int, default=200, help="bars skipped at the start")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="liqsignal", description="Liquidation maps for crypto futures")
    p.add_argument("--version", action="version", version=f"liqsignal {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the map on bundled data, print clusters, evaluate")
    d.add_argument("--out", default="out", help="folder for the picture and CSV (default out/)")
    d.add_argument("--config", help="JSON config with a liqsignal.engine section")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument(
        "--range", type=_positive_float, default=12.0, help="cluster table range, %% of price"
    )
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("evaluate", help="predicted vs realized liquidations, with baselines")
    _add_history_arguments(
        e, volume_help="CSV timestamp,volume to join (default: bundled, for bundled)"
    )
    e.add_argument("--config", help="JSON config with a liqsignal.engine section")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--top-k", type=int, default=3, help="touches: clusters per side")
    e.add_argument("--horizon", type=int, default=24, help="touches: bars ahead (H)")
    e.add_argument("--armed-horizon", type=int, default=6, help="armed: bars ahead")
    e.add_argument("--cascade-ratio", type=float, default=5.0, help="cascade: x trailing mean")
    e.add_argument("--n-random", type=int, default=500, help="random draws per baseline")
    e.add_argument("--events", help="per-event liquidations (default: bundled Hyperliquid)")
    e.add_argument("--candles", help="Freqtrade futures folder with the events' candles")
    e.add_argument("--event-horizon", type=int, default=6, help="events: bars a band stays")
    e.add_argument("--event-range", type=float, default=5.0, help="events: band scan range %%")
    e.add_argument("--no-events", action="store_true", help="skip the event-list evaluation")
    e.add_argument("--plot", help="write the evaluation picture to this PNG")
    add_yardstick_arguments(e)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("calibrate", help="walk-forward fit of the free parameters")
    _add_history_arguments(c, volume_help="CSV timestamp,volume to join")
    c.add_argument("--folds", type=_positive_int, default=2, help="walk-forward test windows")
    c.add_argument("--config", help="starting JSON config with a liqsignal.engine section")
    c.add_argument("--out", default="out/calibrated.json", help="where to write the section")
    c.add_argument("--json", action="store_true", help="print JSON")
    add_store_arguments(c)
    c.add_argument(
        "--realized-scale",
        action="store_true",
        help="instead of the parameter search: scale the map's mass by the realized "
        "liquidations on crossed levels (walk-forward) and measure it against the unscaled map",
    )
    add_sweep_arguments(c)
    c.set_defaults(func=cmd_calibrate)

    m = sub.add_parser("map", help="clusters table and picture from stored data")
    m.add_argument(
        "market", help='market: "BTC", "btc", "BTCUSDT" or "BTC/USDT:USDT" (all the same)'
    )
    m.add_argument(
        "--exchange",
        action="append",
        default=None,
        help="exchange whose stored data to map (repeatable: one map over all; default binance)",
    )
    m.add_argument("--timeframe", default="1h", help="candle timeframe of the files (default 1h)")
    src = m.add_mutually_exclusive_group()
    src.add_argument("--from-data", help="Freqtrade data folder (default user_data/data)")
    src.add_argument("--live", action="store_true", help="fetch live data through ccxt (store)")
    m.add_argument(
        "--datadir",
        default="user_data/data",
        help="data folder: read from it, and with --live the store it fills (default "
        "user_data/data)",
    )
    m.add_argument("--out", default="out", help="folder for the PNG (default out/)")
    m.add_argument("--html", help="also write an interactive page (plotly) to this file")
    m.add_argument("--limit", type=_positive_int, default=8, help="clusters per side (default 8)")
    m.add_argument("--config", help="JSON config with a liqsignal.engine section")
    m.add_argument("--json", action="store_true", help="print JSON instead of the table")
    m.add_argument(
        "--range", type=_positive_float, default=12.0, help="cluster table range, %% of price"
    )
    m.add_argument(
        "--no-buckets",
        action="store_true",
        help="do not split the current levels by leverage in the picture",
    )
    m.add_argument("--ccxt-config", help='--live: JSON {"<exchange>": {ccxt settings}}')
    m.add_argument(
        "--history", type=_positive_int, default=1000, help="--live: bars to fill and map"
    )
    m.add_argument("--now", type=_utc_time, help="--live: fixed 'now' (UTC), for replayed data")
    m.add_argument("--retries", type=_positive_int, default=5, help="--live: attempts per request")
    m.set_defaults(func=cmd_map)

    try:
        from liqsignal.data.download import add_download_arguments, run_download

        help_ = "fetch candles, OI and funding into the store"
        _add_command(sub, "download", add_download_arguments, run_download, help=help_)
    except ImportError:  # pragma: no cover - optional data extras missing
        pass

    try:
        from liqsignal.cli_alerts import add_alerts_arguments, run_alerts

        help_ = "refresh maps on a schedule and send Telegram alerts"
        _add_command(sub, "alerts", add_alerts_arguments, run_alerts, help=help_)
    except ImportError:  # pragma: no cover - python-telegram-bot / apscheduler missing
        pass

    from liqsignal.replay.__main__ import add_replay_arguments, run_replay

    _add_command(
        sub,
        "replay",
        add_replay_arguments,
        run_replay,
        help="serve stored data as a local exchange (see docs/replay.md)",
        description="Serve a Freqtrade datadir as a local exchange on 127.0.0.1 until Ctrl-C; "
        "prints the exchange.ccxt_config overlay as JSON.",
    )

    from liqsignal.guard_report import add_guard_report_arguments, run_guard_report

    help_ = "what the guards did in a Freqtrade backtest"
    _add_command(sub, "guard-report", add_guard_report_arguments, run_guard_report, help=help_)
    add_forecast_parsers(sub)
    add_liquidation_parsers(sub)
    add_watch_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "exchange", "unset") is None:
        args.exchange = ["binance"]
    try:
        return int(args.func(args) or 0)
    except LiqsignalError as e:
        print(f"liqsignal: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written, a port taken, ...
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(
            f"liqsignal: error: {e.strerror or e}{where}: check the path or port given",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
