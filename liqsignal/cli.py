"""The ``liqsignal`` command: demo, evaluate, map, download, replay."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from liqsignal.exceptions import LiqsignalError

__all__ = ["main"]


def _load_engine_config(path: str | None) -> Any:
    from liqsignal.config import MapConfig

    if path is None:
        return MapConfig()
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    section = data.get("liqsignal", {}).get("engine", data) if isinstance(data, dict) else data
    return MapConfig.from_dict(section)


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


def _evaluation(args: argparse.Namespace) -> dict[str, Any]:
    from liqsignal.evaluate import BUNDLED_COINGLASS, BUNDLED_VOLUME, evaluate_bars, load_coinglass

    data = args.data or BUNDLED_COINGLASS
    volume = (
        None if args.no_volume else (args.volume or (BUNDLED_VOLUME if not args.data else None))
    )
    df = load_coinglass(data, volume)
    cfg = _load_engine_config(args.config)
    t0 = time.perf_counter()
    res = evaluate_bars(df, config=cfg, warmup=args.warmup)
    return {
        "data": str(data),
        "volume": str(volume) if volume else None,
        "bars": len(df),
        "warmup": args.warmup,
        "seconds": round(time.perf_counter() - t0, 3),
        "sides": [r.to_dict() for r in res],
    }


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


def cmd_evaluate(args: argparse.Namespace) -> int:
    ev = _evaluation(args)
    if args.json:
        print(json.dumps(ev, indent=2))
    else:
        _print_evaluation(ev)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the map on bundled real BTC data, print clusters, write a picture, evaluate."""
    from liqsignal.evaluate import load_coinglass
    from liqsignal.features import compute_features
    from liqsignal.plot import plot_map

    t0 = time.perf_counter()
    df = load_coinglass()
    frame = df.drop(columns=["realized_long_usd", "realized_short_usd"])
    cfg = _load_engine_config(args.config)
    feats, lmap = compute_features(frame, cfg, return_map=True)
    snap = lmap.snapshot(scan_range_pct=args.range)
    rows = _cluster_rows(snap)
    out = Path(args.out)
    png = plot_map(lmap, out / "btc_liquidation_map.png", title="BTC 1h, bundled data")
    feats.assign(date=frame["date"]).to_csv(out / "btc_features.csv", index=False)
    args.data = None
    args.volume = None
    args.no_volume = False
    args.warmup = 200
    ev = _evaluation(args)
    result = {
        "bars": len(frame),
        "last_bar": str(frame["date"].iloc[-1]),
        "price": snap.price,
        "clusters": rows,
        "picture": str(png),
        "features_csv": str(out / "btc_features.csv"),
        "evaluation": ev,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"liqsignal demo: BTC 1h, {len(frame)} bars to {frame['date'].iloc[-1]}")
    _print_clusters(rows, snap.price)
    last = feats.iloc[-1]
    print(
        f"last bar: long armed {int(last['liq_long_armed'])} (score "
        f"{last['liq_long_armed_score']:.2f}), short armed {int(last['liq_short_armed'])} "
        f"(score {last['liq_short_armed_score']:.2f})"
    )
    _print_evaluation(ev)
    print(f"picture: {png}\nfeatures: {out / 'btc_features.csv'}")
    print(f"done in {result['seconds']} s")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """Clusters table and picture from stored Freqtrade-layout files."""
    import pandas as pd

    from liqsignal.features import compute_features, compute_features_multi
    from liqsignal.plot import plot_map

    datadir = Path(args.datadir)
    frames = {}
    proxy = []
    pair = args.market if "/" in args.market else f"{args.market}/USDT:USDT"
    fname = pair.replace("/", "_").replace(":", "_")
    for ex in args.exchange:
        base = datadir / ex / "futures"
        path = base / f"{fname}-{args.timeframe}-futures.feather"
        if not path.is_file():
            raise LiqsignalError(f"no candles for {pair} on {ex}: {path} is missing")
        df = pd.read_feather(path)
        oi_path = base / f"{fname}-{args.timeframe}-open_interest.feather"
        if oi_path.is_file():
            oi = pd.read_feather(oi_path)
            df = df.merge(oi, on="date", how="left")
        else:
            proxy.append(ex)
        fr_path = base / f"{fname}-1h-funding_rate.feather"
        if fr_path.is_file():
            fr = pd.read_feather(fr_path)
            if "funding_rate" in fr.columns:
                df = pd.merge_asof(df, fr[["date", "funding_rate"]], on="date")
        frames[ex] = df
    cfg = _load_engine_config(args.config)
    if len(frames) == 1:
        ex = next(iter(frames))
        _feats, lmap = compute_features(
            frames[ex], cfg.replace(exchange=ex, symbol=pair), proxy=bool(proxy), return_map=True
        )
    else:
        _feats, lmap = compute_features_multi(
            frames, cfg.replace(symbol=pair), proxy=proxy, return_map=True
        )
    snap = lmap.snapshot(scan_range_pct=args.range)
    rows = _cluster_rows(snap, limit=args.limit)
    png = plot_map(lmap, Path(args.out) / f"{fname}_{args.timeframe}_map.png", title=pair)
    if args.json:
        print(
            json.dumps(
                {
                    "market": pair,
                    "price": snap.price,
                    "clusters": rows,
                    "volume_proxy": proxy,
                    "picture": str(png),
                },
                indent=2,
            )
        )
    else:
        if proxy:
            print(f"volume-proxy mode (no open interest stored) for: {', '.join(proxy)}")
        _print_clusters(rows, snap.price)
        print(f"picture: {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liqsignal", description="Liquidation maps for crypto futures")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the map on bundled data, print clusters, evaluate")
    d.add_argument("--out", default="out", help="folder for the picture and CSV (default out/)")
    d.add_argument("--config", help="JSON config with a liqsignal.engine section")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--range", type=float, default=12.0, help="cluster table range, %% of price")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("evaluate", help="predicted vs realized liquidations, with baseline")
    e.add_argument("--data", help="CoinGlass 1h CSV (default: bundled BTC export)")
    e.add_argument("--volume", help="CSV timestamp,volume to join (default: bundled, for bundled)")
    e.add_argument("--no-volume", action="store_true", help="do not join volume")
    e.add_argument("--warmup", type=int, default=200, help="bars skipped at the start")
    e.add_argument("--config", help="JSON config with a liqsignal.engine section")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("map", help="clusters table and picture from stored data")
    m.add_argument("market", help='market, e.g. "BTC" or "BTC/USDT:USDT"')
    m.add_argument("--exchange", action="append", default=None, help="exchange (repeatable)")
    m.add_argument("--timeframe", default="1h")
    m.add_argument("--datadir", default="user_data/data", help="Freqtrade data folder")
    m.add_argument("--out", default="out")
    m.add_argument("--limit", type=int, default=8, help="clusters per side")
    m.add_argument("--config", help="JSON config with a liqsignal.engine section")
    m.add_argument("--json", action="store_true")
    m.add_argument("--range", type=float, default=12.0, help="cluster table range, %% of price")
    m.set_defaults(func=cmd_map)

    try:
        from liqsignal.data.download import add_download_arguments, run_download

        dl = sub.add_parser("download", help="fetch candles, OI and funding into the store")
        add_download_arguments(dl)
        dl.set_defaults(func=run_download)
    except ImportError:  # pragma: no cover - optional data extras missing
        pass

    r = sub.add_parser("replay", help="serve stored data as a local exchange (see docs/replay.md)")
    r.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the replay server")
    r.set_defaults(func=lambda a: _replay(a.rest))
    return p


def _replay(rest: list[str]) -> int:
    from liqsignal.data.replay.__main__ import main as replay_main

    return replay_main(rest)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
