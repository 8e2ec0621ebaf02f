"""What the guards did in a backtest: decisions, actions, and the trades they touched.

``GuardTally`` counts, per strategy and guard, the decisions the ``LiqGuardMixin`` callbacks
made (one per pair, side and candle) and which of them acted (entry refused, leverage capped,
stop tightened), with the trades they touched. In backtesting the mixin writes the tally next to
the results (``liqsignal_guards-<Strategy>.json`` in the backtest directory) when the process
ends and prints the summary. ``liqsignal guard-report <result zip/json/dir>`` prints it again
from those files.

The summary puts the touched trades beside the others: trades, mean profit, mean MAE (the
trade's worst price against its open rate, from the result's ``min_rate`` / ``max_rate``), and
how many would have been liquidated within 24 h of their open at their own leverage (from the
stored candles; liquidation price from the exchange's formula and maintenance tier). Refused
entries have no trade: for them the MAE and liquidation over the 24 h after the refusal, at the
run's median leverage, are given, against the same figures for the entries that went through.
"""

from __future__ import annotations

import atexit
import json
import math
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.exceptions import ConfigError, DataError

__all__ = [
    "GUARDS",
    "GuardTally",
    "format_report",
    "guard_report",
    "load_backtest",
    "tally",
]

GUARDS = ("entry", "leverage", "stop")
SIDECAR = "liqsignal_guards-{strategy}.json"
_ACTED = {"entry": "refused", "leverage": "capped", "stop": "tightened"}


def _ms(when: datetime | pd.Timestamp | None) -> int | None:
    if when is None:
        return None
    ts = pd.Timestamp(when)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


@dataclass
class GuardTally:
    """Decisions of one strategy's guards. Thread-safe; one decision per (guard, pair, side,
    candle) counts once however often the callback asks."""

    strategy: str
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GUARDS, 0))
    acted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GUARDS, 0))
    #: trades a guard acted on, as "pair|open ms" (leverage: the entry's time; stop: the trade's)
    trades: dict[str, set[str]] = field(default_factory=lambda: {g: set() for g in GUARDS})
    #: refused entries: pair, side, decision candle (ms), rate
    refused: list[tuple[str, str, int, float]] = field(default_factory=list)
    _seen: set[tuple[str, str, str, int | None]] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self,
        guard: str,
        pair: str,
        side: str,
        candle: datetime | pd.Timestamp | None,
        acted: bool,
        *,
        trade_open: datetime | pd.Timestamp | None = None,
        rate: float = math.nan,
    ) -> None:
        key = (guard, pair, side, _ms(candle))
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self.decisions[guard] += 1
            if not acted:
                return
            self.acted[guard] += 1
            if trade_open is not None:
                self.trades[guard].add(f"{pair}|{_ms(trade_open)}")
            if guard == "entry" and key[3] is not None:
                self.refused.append((pair, side, key[3], float(rate)))

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "strategy": self.strategy,
                "decisions": dict(self.decisions),
                "acted": dict(self.acted),
                "trades": {g: sorted(v) for g, v in self.trades.items()},
                "refused": [list(r) for r in self.refused],
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardTally:
        t = cls(str(data["strategy"]))
        t.decisions.update({g: int(v) for g, v in data.get("decisions", {}).items()})
        t.acted.update({g: int(v) for g, v in data.get("acted", {}).items()})
        for g, v in data.get("trades", {}).items():
            t.trades[g] = set(v)
        t.refused = [(str(p), str(s), int(c), float(r)) for p, s, c, r in data.get("refused", [])]
        return t


_TALLIES: dict[str, GuardTally] = {}
_HOOK: dict[str, Any] = {}
_REG_LOCK = threading.Lock()


def tally(strategy: str, config: Mapping[str, Any] | None = None) -> GuardTally:
    """The process-wide tally of ``strategy``; with a backtest ``config`` the first call also
    registers the end-of-run hook (sidecar files and the printed summary)."""
    with _REG_LOCK:
        t = _TALLIES.get(strategy)
        if t is None:
            t = _TALLIES[strategy] = GuardTally(strategy)
        if config is not None and "dir" not in _HOOK:
            _HOOK["dir"] = _export_dir(config)
            _HOOK["datadir"] = config.get("datadir")
            atexit.register(_at_exit)
    return t


def _export_dir(config: Mapping[str, Any]) -> Path:
    d = config.get("exportdirectory")
    if d:
        return Path(str(d))
    return Path(str(config.get("user_data_dir") or "user_data")) / "backtest_results"


def _at_exit() -> None:  # pragma: no cover - runs when a Freqtrade process ends
    out: Path = _HOOK["dir"]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, t in _TALLIES.items():
            (out / SIDECAR.format(strategy=name)).write_text(json.dumps(t.to_dict()) + "\n")
        report = guard_report(out, datadir=_HOOK.get("datadir"))
        print(format_report(report), flush=True)
    except Exception as e:  # the backtest is done: never turn its exit into a failure
        print(f"liqsignal guard report: not written ({type(e).__name__}: {e})", flush=True)


# ------------------------------------------------------------------------------------------
# reading results


def _result_file(path: Path) -> Path:
    if path.is_dir():
        last = path / ".last_result.json"
        if last.is_file():
            name = json.loads(last.read_text())["latest_backtest"]
            return path / name
        found = sorted(path.glob("backtest-result-*.zip")) + sorted(
            path.glob("backtest-result-*.json")
        )
        found = [f for f in found if not f.name.endswith((".meta.json", "_config.json"))]
        if not found:
            raise DataError(f"{path}: no backtest result in this folder")
        return found[-1]
    if not path.is_file():
        raise DataError(f"{path}: no such backtest result (a .zip, .json or their folder)")
    return path


def load_backtest(path: str | Path) -> dict[str, Any]:
    """``{"file", "strategies": {name: result}, "config": {...} or None}`` from a Freqtrade
    backtest result (zip, json, or the folder holding them: its newest result)."""
    f = _result_file(Path(path))
    config = None
    try:
        if f.suffix == ".zip":
            with zipfile.ZipFile(f) as z:
                names = z.namelist()
                main = [n for n in names if n.endswith(".json") and not n.endswith("_config.json")]
                if not main:
                    raise DataError(f"{f}: no result JSON inside")
                data = json.loads(z.read(main[0]))
                conf = [n for n in names if n.endswith("_config.json")]
                if conf:
                    config = json.loads(z.read(conf[0]))
        else:
            data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{f}: not a readable backtest result ({e})") from e
    if not isinstance(data, dict) or "strategy" not in data:
        raise DataError(f"{f}: not a Freqtrade backtest result (no 'strategy' key)")
    return {"file": str(f), "strategies": data["strategy"], "config": config}


# ------------------------------------------------------------------------------------------
# outcomes


def _candles(datadir: Path | None, pair: str, timeframe: str) -> pd.DataFrame | None:
    if datadir is None:
        return None
    name = pair.replace("/", "_").replace(":", "_")
    for base in (datadir / "futures", datadir):
        f = base / f"{name}-{timeframe}-futures.feather"
        if f.is_file():
            df = pd.read_feather(f)[["date", "high", "low"]]
            df["date"] = pd.to_datetime(df["date"], utc=True)
            return df.set_index("date").sort_index()
    return None


def _liq_price(exchange: str, pair: str, side: str, entry: float, leverage: float) -> float:
    from liqsignal.tiers import liquidation_price, load_tiers, tier_for

    tiers = load_tiers(pair) or []
    notional = 10_000.0
    if tiers:
        t = tier_for(tiers, notional, leverage)
        mmr, cum = t.mmr, t.cum
    else:
        mmr, cum = 0.004, 0.0
    return float(
        liquidation_price(exchange, side, entry, leverage, mmr=mmr, notional=notional, cum=cum)
    )


def _liquidated_24h(
    candles: pd.DataFrame | None, start_ms: int, side: str, liq: float
) -> bool | None:
    if candles is None or not math.isfinite(liq):
        return None
    t0 = pd.Timestamp(start_ms, unit="ms", tz="UTC")
    w = candles.loc[t0 : t0 + pd.Timedelta(hours=24)]
    if w.empty:
        return None
    return bool(w["low"].min() <= liq) if side == "long" else bool(w["high"].max() >= liq)


def _mae_after(candles: pd.DataFrame | None, start_ms: int, side: str, rate: float) -> float:
    if candles is None or not rate > 0:
        return math.nan
    t0 = pd.Timestamp(start_ms, unit="ms", tz="UTC")
    w = candles.loc[t0 : t0 + pd.Timedelta(hours=24)]
    if w.empty:
        return math.nan
    worst = w["low"].min() if side == "long" else w["high"].max()
    return float(max(0.0, (rate - worst) / rate if side == "long" else (worst - rate) / rate) * 100)


def _group(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        v = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return round(float(np.mean(v)), 4) if v else None

    liq = [r["liquidated_24h"] for r in rows if r.get("liquidated_24h") is not None]
    return {
        "n": len(rows),
        "profit_pct_mean": mean("profit_pct"),
        "profit_abs_sum": round(sum(float(r.get("profit_abs") or 0.0) for r in rows), 2)
        if any(r.get("profit_abs") is not None for r in rows)
        else None,
        "mae_pct_mean": mean("mae_pct"),
        "liquidated_24h": int(sum(liq)) if liq else None,
        "liquidation_checked": len(liq),
    }


def guard_report(
    path: str | Path,
    *,
    datadir: str | Path | None = None,
    tallies: Mapping[str, GuardTally] | None = None,
) -> dict[str, Any]:
    """Per strategy and guard: decisions, acted, and touched trades against the others.

    ``path``: a backtest result (zip/json) or its folder; the tallies come from the
    ``liqsignal_guards-<Strategy>.json`` files beside it unless given. ``datadir``: the
    Freqtrade datadir with the candles (for liquidations within 24 h); default the result's
    config ``datadir``, else ``user_data/data/<exchange>``.
    """
    res = load_backtest(path)
    folder = Path(res["file"]).parent
    config = res["config"] or {}
    exchange = str((config.get("exchange") or {}).get("name") or "binance")
    dd = Path(str(datadir or config.get("datadir") or f"user_data/data/{exchange}"))
    out: dict[str, Any] = {"file": res["file"], "datadir": str(dd), "strategies": {}}
    for name, strat in res["strategies"].items():
        t = (tallies or {}).get(name)
        side_file = folder / SIDECAR.format(strategy=name)
        if t is None and side_file.is_file():
            try:
                t = GuardTally.from_dict(json.loads(side_file.read_text()))
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{side_file}: not a guard tally ({e})") from e
        trades = strat.get("trades") or []
        tf = str(strat.get("timeframe") or config.get("timeframe") or "1h")
        rows = []
        cache: dict[str, pd.DataFrame | None] = {}
        for tr in trades:
            pair = str(tr["pair"])
            if pair not in cache:
                cache[pair] = _candles(dd, pair, tf)
            side = "short" if tr.get("is_short") else "long"
            rate = float(tr["open_rate"])
            lev = float(tr.get("leverage") or 1.0)
            worst = float(tr["min_rate"] if side == "long" else tr["max_rate"])
            mae = max(0.0, (rate - worst) / rate if side == "long" else (worst - rate) / rate)
            liq = _liq_price(exchange, pair, side, rate, lev)
            rows.append(
                {
                    "key": f"{pair}|{int(tr['open_timestamp'])}",
                    "profit_pct": float(tr["profit_ratio"]) * 100,
                    "profit_abs": float(tr["profit_abs"]),
                    "mae_pct": mae * 100,
                    "leverage": lev,
                    "liquidated_24h": _liquidated_24h(
                        cache[pair], int(tr["open_timestamp"]), side, liq
                    ),
                }
            )
        entry: dict[str, Any] = {"trades": len(trades), "guards": {}}
        if t is None:
            entry["note"] = (
                f"no guard decisions ({side_file.name} is missing): its guards are off "
                "(liq_guards_enabled = False, guards.enabled false) or it has no LiqGuardMixin"
            )
            out["strategies"][name] = entry
            continue
        lev_ref = float(np.median([r["leverage"] for r in rows])) if rows else 1.0
        for g in GUARDS:
            touched = t.trades[g]
            hit = [r for r in rows if r["key"] in touched]
            rest = [r for r in rows if r["key"] not in touched]
            item: dict[str, Any] = {
                "decisions": t.decisions[g],
                "acted": t.acted[g],
                "acted_means": _ACTED[g],
                "affected": _group(hit),
                "unaffected": _group(rest),
            }
            if g == "entry":
                ref = []
                for pair, side, candle, rate in t.refused:
                    if pair not in cache:
                        cache[pair] = _candles(dd, pair, tf)
                    liq = _liq_price(exchange, pair, side, rate, lev_ref) if rate > 0 else math.nan
                    ref.append(
                        {
                            "mae_pct": _mae_after(cache[pair], candle, side, rate),
                            "liquidated_24h": _liquidated_24h(cache[pair], candle, side, liq),
                        }
                    )
                item["affected"] = _group(ref)
                item["affected"]["note"] = (
                    f"refused entries (no trade): MAE and liquidation at {lev_ref:g}x over the "
                    "24 h after the refusal"
                )
            entry["guards"][g] = item
        out["strategies"][name] = entry
    return out


def _cell(v: Any, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (one block per strategy)."""
    lines = [f"liqsignal guard report: {report['file']}"]
    head = (
        f"{'guard':<9}{'decisions':>10}{'acted':>7}  {'trades':<16}{'n':>5}{'profit %':>10}"
        f"{'MAE %':>8}{'liq 24h':>9}"
    )
    for name, s in report["strategies"].items():
        lines.append(f"{name}: {s['trades']} trades")
        if "note" in s:
            lines.append(f"  {s['note']}")
            continue
        lines.append("  " + head)
        for g, item in s["guards"].items():
            for k, label in (("affected", item["acted_means"]), ("unaffected", "others")):
                grp = item[k]
                first = k == "affected"
                liq = grp["liquidated_24h"]
                liq_txt = "n/a" if liq is None else f"{liq}/{grp['liquidation_checked']}"
                lines.append(
                    "  "
                    + (f"{g:<9}{item['decisions']:>10}{item['acted']:>7}  " if first else " " * 28)
                    + f"{label:<16}{grp['n']:>5}{_cell(grp['profit_pct_mean']):>10}"
                    + f"{_cell(grp['mae_pct_mean']):>8}"
                    + f"{liq_txt:>9}"
                )
        lines.append(
            "  (entry: refused signals have no trade; their MAE and liquidation are over the "
            "24 h after the refusal at the run's median leverage)"
        )
    return "\n".join(lines)


def add_guard_report_arguments(p: Any) -> None:
    p.add_argument("result", help="backtest result: .zip, .json, or their folder (newest result)")
    p.add_argument(
        "--datadir",
        help="Freqtrade datadir with the candles (default: the result's config, else "
        "user_data/data/<exchange>)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def run_guard_report(args: Any) -> int:
    try:
        rep = guard_report(args.result, datadir=args.datadir)
    except ConfigError:
        raise
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(format_report(rep))
    return 0
