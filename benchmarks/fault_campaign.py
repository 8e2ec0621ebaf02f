"""Fault campaign: bad data, bad config, damaged files, concurrency and alert faults, counted.

Run: ``.venv/bin/python benchmarks/fault_campaign.py`` (``--quick`` for fewer cases). It prints,
per area, the cases tried and how each ended: a clear error (liqsignal's own exception naming
the column / row / key / path), a crash (any other exception, or a process killed by a signal),
a hang (a case over its time limit), silent garbage (accepted, but wrong: non-finite or negative
USD, mass not conserved, damaged rows read back as valid), rows lost, alerts sent twice and
secrets printed. The targets for crashes, hangs, garbage, rows lost, duplicates and secrets are 0;
``--check`` exits 1 when one is missed. Every case runs against the real code (numba kernels,
feather files, SQLite, python-telegram-bot against a local fake Bot API on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bars_util import BAD_VALUES as BAD  # noqa: E402
from bars_util import FRAME_COLUMNS as COLS  # noqa: E402
from bars_util import random_frame  # noqa: E402
from bench_util import fake_api_sender  # noqa: E402
from helpers import flip_one_bit  # noqa: E402

from liqsignal import nb  # noqa: E402
from liqsignal.config import MapConfig  # noqa: E402
from liqsignal.exceptions import LiqsignalError  # noqa: E402
from liqsignal.guards import GUARD_COLUMNS  # noqa: E402

TOKEN = "7000001:AAH-liqsignalTestTokenSecret_xyz123"
OUTCOMES = ("clear_error", "ok", "crash", "hang", "garbage", "rows_lost", "twice", "secret")


class Tally:
    def __init__(self) -> None:
        self.areas: dict[str, Counter[str]] = {}

    def add(self, area: str, outcome: str, n: int = 1) -> None:
        self.areas.setdefault(area, Counter())[outcome] += n

    def print(self) -> dict[str, int]:
        head = f"{'area':<28}{'cases':>7}" + "".join(f"{o:>12}" for o in OUTCOMES)
        print(head)
        total: Counter[str] = Counter()
        for area, c in self.areas.items():
            cases = sum(c[o] for o in ("clear_error", "ok", "crash", "hang", "garbage"))
            print(f"{area:<28}{cases:>7}" + "".join(f"{c[o]:>12}" for o in OUTCOMES))
            total.update(c)
            total["cases"] += cases
        print(f"{'total':<28}{total['cases']:>7}" + "".join(f"{total[o]:>12}" for o in OUTCOMES))
        return dict(total)


# -- the engine and its inputs --------------------------------------------------------------


def _damage_frame(rng: np.random.Generator, df: pd.DataFrame) -> pd.DataFrame:
    n = len(df)
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.choice(["value", "wick", "nan_run", "object", "tz"])
        row = int(rng.integers(0, n))
        if kind == "value":
            col = str(rng.choice(COLS))
            value = BAD[int(rng.integers(0, len(BAD)))]
            if isinstance(value, str) or value is None:
                df[col] = df[col].astype(object)
            df.loc[row, col] = value
        elif kind == "wick":
            f = float(rng.choice([1e2, 1e4, 1e6]))
            if rng.random() < 0.5:
                df.loc[row, "high"] *= f
            else:
                df.loc[row, "low"] /= f
        elif kind == "nan_run":
            col = str(rng.choice(["volume", "open_interest_amount", "funding_rate"]))
            df.loc[row : row + int(rng.integers(1, 20)), col] = np.nan
        elif kind == "object":
            df[str(rng.choice(COLS))] = df[str(rng.choice(COLS))].astype(object)
        else:
            df["date"] = df["date"].dt.tz_localize(None)
    return df


def _check_features(res: pd.DataFrame, lmap) -> str:
    for c in (c for c in nb.OUT_NAMES if c.endswith("_usd")):
        v = res[c].to_numpy()
        if not (np.isfinite(v).all() and (v >= 0).all()):
            return "garbage"
    acc = lmap.accounting()
    if not all(math.isfinite(v) and v >= 0 for v in acc.values()):
        return "garbage"
    out = sum(acc[k] for k in ("consumed_usd", "closed_usd", "decayed_usd", "dropped_usd"))
    total = out + acc["standing_usd"]
    if abs(total - acc["opened_usd"]) > 1e-7 * max(acc["opened_usd"], 1e-9) + 1e-9:
        return "garbage"
    return "ok"


def engine_worker(seed: int, n_frames: int, out_path: str) -> None:
    """Child process: random bad frames through compute_features; one JSON line per case."""
    from liqsignal.exceptions import InputError
    from liqsignal.features import compute_features

    rng = np.random.default_rng(seed)
    with open(out_path, "a") as fh:
        for _ in range(n_frames):
            price = float(rng.choice([1e-8, 0.002, 1.0, 2300.0, 50_000.0, 1e9]))
            df = _damage_frame(rng, random_frame(rng, int(rng.integers(1, 60)), price))
            relative = bool(rng.random() < 0.5)
            kw = {"step": None, "step_bps": 10.0} if relative else {"step": price * 1e-3}
            cfg = MapConfig(**kw, heatmap_frames=8, heatmap_rows=16)
            t0 = time.perf_counter()
            try:
                res, lmap = compute_features(df, cfg, return_map=True)
                outcome = _check_features(res, lmap)
            except InputError as e:
                named = any(f"'{c}'" in str(e) for c in [*COLS, "date"]) or "bins" in str(e)
                outcome = "clear_error" if named else "garbage"
            except Exception as e:
                outcome = f"crash:{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            if dt > 5.0:
                outcome = "hang"
            fh.write(json.dumps({"outcome": outcome, "s": dt}) + "\n")
            fh.flush()


def engine_campaign(t: Tally, n_frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "engine.jsonl"
        seed = 0
        done = 0
        while done < n_frames:
            # a child per batch: a segfault kills the batch, counted, and the next batch goes on
            p = mp.get_context("spawn").Process(
                target=engine_worker, args=(seed, n_frames - done, str(out))
            )
            p.start()
            p.join(900)
            if p.exitcode != 0:  # killed by a signal (a segfault) or failed: one crash
                with open(out, "a") as fh:
                    fh.write(json.dumps({"outcome": f"crash:exit {p.exitcode}"}) + "\n")
            lines = out.read_text().splitlines() if out.exists() else []
            done = len(lines)
            seed += 1
        for line in lines[:n_frames]:
            o = json.loads(line).get("outcome", "crash")
            t.add("engine: random frames", o.split(":")[0])
            if o.startswith("crash:"):
                print("  engine crash:", o[:200])
    # one bar of high = inf (the reproducer) and single bad wicks, timed
    from liqsignal.features import compute_features

    compute_features(random_frame(np.random.default_rng(1), 50, 50_000.0))  # compiled, not timed
    for factor in (1e4, 1e5, 1e6, 1e8):
        df = random_frame(np.random.default_rng(1), 50, 50_000.0)
        df.loc[25, "high"] = df.loc[25, "close"] * factor
        t0 = time.perf_counter()
        try:
            res, lmap = compute_features(df, return_map=True)
            o = _check_features(res, lmap)
        except LiqsignalError:
            o = "clear_error"
        dt = time.perf_counter() - t0
        t.add("engine: one bad wick", "hang" if dt > 2.0 else o)
        print(f"  wick x{factor:g} in 50 bars: {dt:.3f} s ({o})")


# -- config ---------------------------------------------------------------------------------


def config_campaign(t: Tally) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_config_bounds as tcb

    from liqsignal.config import AlertConfig, alert_settings
    from liqsignal.freqtrade import liq_settings
    from liqsignal.guards import GuardConfig

    cases: list[tuple[str, object]] = []
    for key, values in tcb.ENGINE_BAD.items():
        for v in values:
            cases.append(("engine", {key: v, **({"step_bps": None} if key == "step" else {})}))
    for key, values in tcb.GUARD_BAD.items():
        cases += [("guards", {key: v}) for v in values]
    for key, values in tcb.ALERT_BAD.items():
        cases += [("alerts", {key: v}) for v in values]
    for section in (["step", 50], "step=50", 5, True):
        cases.append(("section", {"liqsignal": {"engine": section}}))
        cases.append(("section", {"liqsignal": {"guards": section}}))
    for exchange in ("binance", 5, ["binance"], None):
        cases.append(("top_exchange", exchange))
    for secret in ([TOKEN], {"v": TOKEN}, TOKEN):
        cases.append(("secret", secret))
    for area, value in cases:
        try:
            if area == "engine":
                MapConfig.from_dict(value)  # type: ignore[arg-type]
            elif area == "guards":
                GuardConfig.from_dict(value)  # type: ignore[arg-type]
            elif area == "alerts":
                AlertConfig.from_dict(value)  # type: ignore[arg-type]
            elif area == "section":
                liq_settings(value)  # type: ignore[arg-type]
            elif area == "top_exchange":
                alert_settings(
                    {"exchange": value, "liqsignal": {"alerts": {"markets": ["BTC/USDT:USDT"]}}}
                )
            else:
                key = "token_env" if value == TOKEN else "token"
                AlertConfig.from_dict({key: value})
        except LiqsignalError as e:
            msg = str(e)
            if TOKEN in msg or "secretsecret" in msg:
                t.add("config: bad values", "secret")
            named = "liqsignal." in msg or msg.startswith("exchange must be")
            t.add("config: bad values", "clear_error" if named else "garbage")
            continue
        except Exception as e:
            t.add("config: bad values", "crash")
            print(f"  config crash: {area} {value!r}: {type(e).__name__}: {e}")
            continue
        if area == "top_exchange" and value is None:
            t.add("config: bad values", "ok")  # null means "not set": documented default
        else:
            t.add("config: bad values", "garbage")
            print(f"  config accepted: {area} {value!r}")


# -- store ----------------------------------------------------------------------------------

PAIR = "BTC/USDT:USDT"


def _rows(start: int, n: int) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC") + pd.Timedelta(hours=start)
    close = 40_000.0 + np.arange(start, start + n, dtype=float)
    return pd.DataFrame(
        {"date": dates, "open": close, "high": close + 5, "low": close - 5, "close": close}
        | {"volume": 1.0 + np.arange(n) % 7}
    )


def _writer(datadir: str, worker: int, n_workers: int, chunks: int) -> None:
    from liqsignal.data.store import FeatherStore

    store = FeatherStore(datadir)
    for c in range(chunks):
        store.merge("binance", PAIR, "1h", "futures", _rows((c * n_workers + worker) * 10, 10))


def store_campaign(t: Tally, flips: int) -> None:
    from liqsignal.data.store import FeatherStore

    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatherStore(tmp)
        good = _rows(0, 300)
        store.merge("binance", PAIR, "1h", "futures", good)
        path = store.path("binance", PAIR, "1h", "futures")
        clean = path.read_bytes()
        want = store.read("binance", PAIR, "1h", "futures")
        for _ in range(flips):
            _, data = flip_one_bit(clean, rng)
            path.write_bytes(data)
            try:
                got = store.read("binance", PAIR, "1h", "futures")
            except LiqsignalError:
                t.add("store: byte flips", "clear_error")
                continue
            except Exception as e:
                t.add("store: byte flips", "crash")
                print(f"  store crash: {type(e).__name__}: {e}")
                continue
            same = got.equals(want)
            t.add("store: byte flips", "ok" if same else "garbage")
        path.write_bytes(clean)
        # several writer processes on one file
        n_workers, chunks = 4, 8
        ctx = mp.get_context("spawn")
        with tempfile.TemporaryDirectory() as tmp2:
            procs = [
                ctx.Process(target=_writer, args=(tmp2, w, n_workers, chunks))
                for w in range(n_workers)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(300)
            got = FeatherStore(tmp2).read("binance", PAIR, "1h", "futures")
            expected = n_workers * chunks * 10
            t.add("store: 4 writer processes", "ok")
            t.add("store: 4 writer processes", "rows_lost", expected - len(got))
            print(f"  4 writers x {chunks} merges: {len(got)} of {expected} rows kept")
        # path components and write faults
        for tf in ("1h/../../../../escaped", "../1h", "1h\x00"):
            try:
                store.merge("binance", PAIR, tf, "futures", _rows(0, 3))
                t.add("store: paths and faults", "garbage")
            except LiqsignalError:
                t.add("store: paths and faults", "clear_error")
        script = textwrap.dedent(
            f"""
            import resource, signal, sys
            sys.path.insert(0, {str(ROOT / "benchmarks")!r})
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            from fault_campaign import _rows
            from liqsignal.data.store import FeatherStore
            from liqsignal.exceptions import DataError
            resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
            try:
                FeatherStore({tmp!r}).merge("binance", {PAIR!r}, "1h", "futures", _rows(0, 5000))
                print("accepted")
            except DataError as e:
                print("clear", e)
            """
        )
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        t.add(
            "store: paths and faults",
            "clear_error" if r.stdout.startswith("clear") else "crash",
        )
        t.add("store: paths and faults", "ok" if path.read_bytes() == clean else "rows_lost")
        # orphan temporary files
        for i in range(5):
            (path.parent / f".{path.name}.x{i}.tmp").write_bytes(b"partial")
        store.merge("binance", PAIR, "1h", "futures", _rows(300, 2))
        left = list(path.parent.glob("*.tmp"))
        t.add("store: paths and faults", "ok" if not left else "garbage")


# -- guards ---------------------------------------------------------------------------------


def guards_campaign(t: Tally, n: int) -> None:
    from liqsignal.freqtrade import LiqGuardMixin

    now = datetime(2026, 2, 1, 12, tzinfo=UTC)
    odd = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, None, "x", True]
    rng = np.random.default_rng(5)

    class DP:
        def __init__(self, frame):
            self.frame = frame

        def get_analyzed_dataframe(self, pair, tf):
            return self.frame, now

    class Strat(LiqGuardMixin):
        timeframe = "1h"

        def __init__(self, dp, config):
            self.dp = dp
            self.config = config

    class Trade:
        is_short = False
        leverage = 5.0
        open_date_utc = now

    configs = [
        {"exchange": {"name": "binance"}},
        {"liqsignal": {"guards": {"on_stale": "closed"}}},
        {"liqsignal": {"engine": ["step", 50]}},
        {"exchange": "binance"},
        None,
    ]
    cols = list(GUARD_COLUMNS)
    for _ in range(n):
        row = {c: float(rng.uniform(0.9, 1.1) * 50_000) for c in cols}
        for c in rng.choice(cols, int(rng.integers(0, 5))):
            row[c] = odd[int(rng.integers(0, len(odd)))]
        date = [now - timedelta(hours=2), now - timedelta(days=30), pd.NaT, None][
            int(rng.integers(0, 4))
        ]
        try:
            frame = pd.DataFrame({"date": [date]} | {k: [v] for k, v in row.items()})
        except Exception:
            frame = pd.DataFrame()
        cfg = configs[int(rng.integers(0, len(configs)))]
        s = Strat(DP(frame), cfg)
        rate = [50_000.0, math.nan, math.inf, 0.0, None][int(rng.integers(0, 5))]
        lev = [10, None, math.nan, math.inf, -5][int(rng.integers(0, 5))]
        side = ["long", "short", None][int(rng.integers(0, 3))]
        try:
            a = s.liq_confirm_trade_entry(PAIR, rate, side, now)
            b = s.liq_leverage(PAIR, now, rate, lev, 125, side)
            c = s.liq_custom_stoploss(PAIR, Trade(), now, rate)
        except Exception as e:
            t.add("guards: mixin calls", "crash")
            print(f"  guard raised: {type(e).__name__}: {e}")
            continue
        bad = not isinstance(a, bool) or not (isinstance(b, float) and math.isfinite(b))
        bad = bad or (c is not None and not (math.isfinite(c) and c < 0))
        closed = "closed" in str(cfg)
        missing = date is None or date is pd.NaT or date < now - timedelta(days=1)
        missing = missing or not isinstance(rate, float) or not math.isfinite(rate) or rate <= 0
        if missing and closed and (a or b != 1.0):
            bad = True
        t.add("guards: mixin calls", "garbage" if bad else "ok")


# -- outbox and alerts ----------------------------------------------------------------------


def outbox_campaign(t: Tally, rounds: int) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "alerts"))
    from fake_botapi import FakeBotAPI

    from liqsignal.alerts.message import Alert
    from liqsignal.alerts.outbox import Outbox
    from liqsignal.alerts.telegram import RetryPolicy

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)

    async def one(tmp: Path, i: int) -> None:
        api = FakeBotAPI(valid_token=TOKEN)
        await api.start()
        box = Outbox(tmp / f"o{i}.sqlite", busy_timeout_s=0.2)
        sender = fake_api_sender(
            api, box, RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.02)
        )
        alert = Alert(key=f"armed|X|long|b{i}|2026-01-01T00:00:00Z", kind="armed", market="X",
                      text="t")  # fmt: skip
        hold = threading.Event()
        go = threading.Event()

        def holder() -> None:
            c = sqlite3.connect(str(box.path), isolation_level=None, check_same_thread=False)
            c.execute("BEGIN IMMEDIATE")
            hold.set()
            go.wait(10)
            c.execute("ROLLBACK")
            c.close()

        th = threading.Thread(target=holder)
        th.start()
        hold.wait(5)
        t0 = time.monotonic()
        try:
            await sender.notify(alert)
            await sender.notify(alert)
        except Exception as e:
            t.add("alerts: busy outbox", "crash")
            print(f"  notify raised: {type(e).__name__}: {e}")
        blocked = time.monotonic() - t0
        sent_while_busy = len(api.calls_to("sendMessage"))
        go.set()
        th.join(10)
        await sender.notify(alert)
        await sender.flush()
        n = len(api.calls_to("sendMessage"))
        t.add("alerts: busy outbox", "hang" if blocked > 3.0 else "ok")
        if sent_while_busy:
            t.add("alerts: busy outbox", "garbage")  # sent while not stored
        if n > 1:
            t.add("alerts: busy outbox", "twice", n - 1)
        if n == 0:
            t.add("alerts: busy outbox", "rows_lost")
        await sender.stop()
        box.close()
        await api.stop()
        # damaged and foreign files
        f = tmp / f"foreign{i}.sqlite"
        c = sqlite3.connect(f)
        c.execute("CREATE TABLE users (id INTEGER)")
        c.commit()
        c.close()
        before = f.read_bytes()
        try:
            Outbox(f)
            t.add("alerts: outbox files", "garbage")
        except LiqsignalError:
            t.add("alerts: outbox files", "clear_error" if f.read_bytes() == before else "garbage")

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(rounds):
                await one(Path(tmp), i)

    asyncio.run(main())
    logging.getLogger().removeHandler(handler)
    if TOKEN in log.getvalue():
        t.add("alerts: busy outbox", "secret")


def kill_campaign(t: Tally, trials: int) -> None:
    """kill -9 a process that merges rows into the store; the file must stay readable with
    every row of every completed merge, and the next merge cleans the orphans."""
    from liqsignal.data.store import FeatherStore

    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        from fault_campaign import _rows
        from liqsignal.data.store import FeatherStore
        s = FeatherStore(sys.argv[1])
        for c in range(10_000):
            s.merge("binance", {PAIR!r}, "1h", "futures", _rows(c * 10, 10))
            print(c, flush=True)
        """
    )
    rng = np.random.default_rng(9)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(trials):
            p = subprocess.Popen(
                [sys.executable, "-c", script, tmp], stdout=subprocess.PIPE, text=True
            )
            time.sleep(float(rng.uniform(2.0, 3.5)))
            os.kill(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            done = [int(x) for x in out.split()]
            store = FeatherStore(tmp)
            try:
                got = store.read("binance", PAIR, "1h", "futures")
            except LiqsignalError:
                t.add("store: kill -9", "garbage")
                continue
            need = (max(done) + 1) * 10 if done else 0
            t.add("store: kill -9", "ok")
            t.add("store: kill -9", "rows_lost", max(0, need - len(got)))
            store.merge("binance", PAIR, "1h", "futures", _rows(10**5, 1))
            path = store.path("binance", PAIR, "1h", "futures")
            if list(path.parent.glob("*.tmp")):
                t.add("store: kill -9", "garbage")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases (about a minute)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = ap.parse_args()
    q = a.quick
    t = Tally()
    t0 = time.perf_counter()
    engine_campaign(t, 300 if q else 3000)
    config_campaign(t)
    store_campaign(t, 40 if q else 200)
    guards_campaign(t, 500 if q else 3000)
    outbox_campaign(t, 3 if q else 10)
    kill_campaign(t, 3 if q else 10)
    print(f"fault campaign ({time.perf_counter() - t0:.0f} s):")
    total = t.print()
    misses = {k: total.get(k, 0) for k in ("crash", "hang", "garbage", "rows_lost", "twice")}
    misses["secret"] = total.get("secret", 0)
    for k, v in misses.items():
        print(f"{'PASS' if v == 0 else 'MISS'}  {k} = {v} (target 0)")
    return 1 if (a.check and any(misses.values())) else 0


if __name__ == "__main__":
    sys.exit(main())
