"""Closed candles over the venues' kline streams for the live MapProvider: the real ccxt.pro
clients of Binance USD-M, Bybit and OKX against local candle stream servers
(liqsignal.replay.ws_candles) over the REST replays' own data and clock.

Data: two markets generated from the bundled real BTC/USDT:USDT slice as the refresh benchmark
makes them (the candles relabelled to 1m, prices rescaled per market, funding every 8h); every
venue serves the same files. One manual clock drives the replays, the streams and the provider.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venues)
from liqsignal.config import MapConfig
from liqsignal.data.candle_streams import LIMITS, CandleStreams
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import MapProvider, MarketSpec
from liqsignal.data.streams import StreamConfig
from liqsignal.exceptions import ConfigError
from liqsignal.replay.server import ManualClock, ReplayExchange
from liqsignal.replay.testing import Fault
from liqsignal.replay.ws_candles import CandleStreamServer

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_refresh.py"
VENUES = ("binance", "bybit", "okx")
MARKETS = ("QAAA", "QAAB")
MIN = pd.Timedelta(minutes=1)
FAST = StreamConfig(
    read_timeout=2.0,
    keep_alive=0.5,
    backoff_base=0.05,
    backoff_max=0.2,
    connect_timeout=3.0,
    tick=0.05,
)
RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_retry_after=0.1)
HISTORY = 40


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_refresh_for_streams", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.Timestamp]:
    root = tmp_path_factory.mktemp("candle_venues")
    start = _bench().generate(root, list(MARKETS), "1m")
    return root, start


Servers = dict[str, tuple[ReplayExchange, CandleStreamServer]]


@pytest.fixture
def clock(data: tuple[Path, pd.Timestamp]) -> ManualClock:
    return ManualClock(data[1])


@pytest.fixture
def servers(data: tuple[Path, pd.Timestamp], clock: ManualClock) -> Iterator[Servers]:
    out: Servers = {}
    for v in VENUES:
        rx = ReplayExchange(data[0] / v, venues=(v,)).start()
        rx.clock = clock
        out[v] = (rx, CandleStreamServer(rx, v, poll_s=0.01).start())
    yield out
    for rx, ws in out.values():
        ws.stop()
        rx.stop()


def _config(servers: Servers) -> dict[str, dict[str, Any]]:
    out = {}
    for v, (_, ws) in servers.items():
        cfg = ws.ccxt_config()
        cfg.update({"rateLimit": 1, "timeout": 5000})
        out[v] = cfg
    return out


def _provider(servers: Servers, clock: ManualClock, datadir: Path, **kw: Any) -> MapProvider:
    kw.setdefault("candle_streams", VENUES)
    return MapProvider(
        [MarketSpec(m, VENUES, "1m") for m in MARKETS],
        config=MapConfig(step=None, step_bps=10.0),
        datadir=datadir,
        ccxt_config=_config(servers),
        history_bars=HISTORY,
        clock=clock,
        retry=RETRY,
        history_limits=False,
        stream_config=FAST,
        **kw,
    )


async def _until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def _live(p: MapProvider, venues: tuple[str, ...] = VENUES) -> bool:
    return all(p._candles_live(m, v) for m in MARKETS for v in venues)


def _requests(servers: Servers, path_part: str) -> dict[str, int]:
    return {v: sum(path_part in x for x in rx.paths()) for v, (rx, _) in servers.items()}


#: candle requests (Binance's taker buy volume is read from the same klines)
CANDLE_PATHS = {"binance": "/fapi/v1/klines", "bybit": "/v5/market/kline", "okx": "candles"}
PER_FEED = {"binance": 2, "bybit": 1, "okx": 1}  # REST requests to backfill one feed


def _candle_requests(servers: Servers) -> dict[str, int]:
    return {v: sum(CANDLE_PATHS[v] in x for x in rx.paths()) for v, (rx, _) in servers.items()}


def _stored(datadir: Path, venue: str, market: str, ctype: str = "futures") -> pd.DataFrame:
    from liqsignal.data.store import FeatherStore

    tf = "1m"
    st = FeatherStore(datadir)
    return st.read(venue, f"{market}/USDT:USDT", tf, ctype)


async def _steps(p: MapProvider, clock: ManualClock, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        clock.t += MIN
        out.append(await p.refresh())
    return out


def test_streamed_rows_equal_rest_rows(servers: Servers, clock: ManualClock, tmp_path: Path):
    """After the REST fill, every new bar of all 3 x 2 feeds comes over the streams (no candle
    request at all), and the stored rows equal the REST answers for the same bars."""

    async def run() -> None:
        p = _provider(servers, clock, tmp_path / "ws")
        ref = _provider(servers, clock, tmp_path / "rest", candle_streams=())
        try:
            r0 = await p.refresh()
            assert not r0.errors
            assert await _until(lambda: _live(p))
            for rx, _ in servers.values():
                rx.clear_log()
            reports = await _steps(p, clock, 3)
            assert all(not r.errors for r in reports)
            assert all(sum(r.new_bars.values()) == 6 for r in reports)
            assert _candle_requests(servers) == dict.fromkeys(VENUES, 0)
            assert all(p.stream_bars[v] == 3 * len(MARKETS) for v in VENUES)
            clock.t += MIN  # one bar on: REST answers OKX's newest bar a refresh late
            assert await ref.refresh()  # the same bars over REST, into another store
        finally:
            await p.aclose()
            await ref.aclose()

        def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
            assert a["date"].is_unique and set(a["date"].iloc[-3:]) <= set(b["date"])
            a = a[a["date"].isin(b["date"])].reset_index(drop=True)
            b = b[b["date"].isin(a["date"])].reset_index(drop=True)
            assert len(a) >= HISTORY - 1
            pd.testing.assert_frame_equal(a, b)

        for v in VENUES:
            for m in MARKETS:
                same(_stored(tmp_path / "ws", v, m), _stored(tmp_path / "rest", v, m))
        for m in MARKETS:  # Binance taker buy volume too (raw k.V / k.Q, which ccxt drops)
            a = _stored(tmp_path / "ws", "binance", m, "taker_buy")
            same(a, _stored(tmp_path / "rest", "binance", m, "taker_buy"))

    asyncio.run(run())


def test_reconnect_gap_is_backfilled_once(servers: Servers, clock: ManualClock, tmp_path: Path):
    """Every venue drops its connections and two bars close while the streams reconnect: those
    bars come over REST (one request per feed), later bars over the streams again, and no bar
    is stored twice."""

    async def run() -> None:
        p = _provider(servers, clock, tmp_path)
        try:
            await p.refresh()
            assert await _until(lambda: _live(p))
            await _steps(p, clock, 1)
            for _, ws in servers.values():
                ws.stall(new_connections=True)  # nothing reaches the clients any more
            clock.t += 2 * MIN  # two bars close unseen
            for _, ws in servers.values():
                ws.disconnect()
                ws.resume()
            for rx, _ in servers.values():
                rx.clear_log()
            assert await _until(lambda: _live(p))
            before = dict(p.stream_backfills)
            r = await p.refresh()
            assert not r.errors and all(n == 2 for n in r.new_bars.values())
            assert {v: p.stream_backfills[v] - before[v] for v in VENUES} == {
                v: PER_FEED[v] * len(MARKETS) for v in VENUES
            }
            got = _candle_requests(servers)  # the REST client's paging may take several
            assert all(got[v] >= PER_FEED[v] * len(MARKETS) for v in VENUES), got
            for rx, _ in servers.values():
                rx.clear_log()
            r = await _steps(p, clock, 2)
            assert all(sum(x.new_bars.values()) == 6 for x in r)
            assert _candle_requests(servers) == dict.fromkeys(VENUES, 0)
            assert all(
                sum(s.reconnects for s in ss) >= 1
                for cs in p._candle_streams
                for ss in cs.streams.values()
            )
        finally:
            await p.aclose()
        for v in VENUES:
            for m in MARKETS:
                df = _stored(tmp_path, v, m)
                assert df["date"].is_unique and df["date"].is_monotonic_increasing
                gaps = pd.DatetimeIndex(df["date"]).to_series().diff().dropna()
                assert (gaps == MIN).all(), f"{v} {m}: a bar is missing"

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["truncated", "shape"])
def test_malformed_frame(servers: Servers, clock: ManualClock, tmp_path: Path, kind: str):
    """A bad candle frame on every venue: nothing wrong is stored, the streams go on (a frame
    ccxt cannot decode costs a reconnect), the next bars arrive and any bar missed is fetched."""

    async def run() -> None:
        p = _provider(servers, clock, tmp_path)
        try:
            await p.refresh()
            assert await _until(lambda: _live(p))
            for _, ws in servers.values():
                ws.malformed(kind)
            await asyncio.sleep(0.3)
            assert await _until(lambda: _live(p))
            reports = await _steps(p, clock, 2)
            assert all(not r.errors for r in reports)
            assert all(sum(r.new_bars.values()) == 6 for r in reports)
            stats = [s for cs in p._candle_streams for ss in cs.streams.values() for s in ss]
            if kind == "shape":
                assert all(s.malformed >= 1 for s in stats), [
                    (s.exchange, s.malformed) for s in stats
                ]
        finally:
            await p.aclose()
        for v in VENUES:
            for m in MARKETS:
                df = _stored(tmp_path, v, m)
                assert df["date"].is_unique and (df[["open", "close"]] > 0).all().all()
                assert len(df) == HISTORY + 1 + 2

    asyncio.run(run())


def test_venue_down_others_go_on(servers: Servers, clock: ManualClock, tmp_path: Path):
    """OKX goes down (stream server stopped, REST answering 503): its feeds go stale, Binance
    and Bybit go on over their streams with no candle request."""

    async def run() -> None:
        p = _provider(servers, clock, tmp_path)
        try:
            await p.refresh()
            assert await _until(lambda: _live(p))
            rx_okx, ws_okx = servers["okx"]
            ws_okx.stop()
            rx_okx.faults.add(Fault("/api/v5", status=503, body="down"))
            assert await _until(lambda: not any(p._candles_live(m, "okx") for m in MARKETS))
            for rx, _ in servers.values():
                rx.clear_log()
            reports = await _steps(p, clock, 3)
            last = reports[-1]
            for m in MARKETS:
                assert (m, "okx") in last.errors
                assert p.status(m)["okx"].stale
                assert not p.status(m)["binance"].stale and not p.status(m)["bybit"].stale
                assert all(r.new_bars[(m, v)] == 1 for r in reports for v in ("binance", "bybit"))
            counts = _candle_requests(servers)
            assert counts["binance"] == 0 and counts["bybit"] == 0
        finally:
            await p.aclose()

    asyncio.run(run())


def test_topic_limits_per_request_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """25 markets: Bybit's subscriptions go 10 topics per request (its replay refuses more),
    Binance's and OKX's in one request each; with the Bybit chunk raised to 25 the venue
    refuses the request and nothing is streamed from it."""
    names = [f"QZ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(25)]
    start = _bench().generate(tmp_path / "v", names, "1m")
    clock = ManualClock(start)
    servers: Servers = {}
    for v in VENUES:
        rx = ReplayExchange(tmp_path / "v" / v, venues=(v,)).start()
        rx.clock = clock
        servers[v] = (rx, CandleStreamServer(rx, v, poll_s=0.01).start())

    async def watch(per_request: int) -> CandleStreams:
        monkeypatch.setitem(LIMITS["bybit"], "per_request", per_request)
        cs = CandleStreams(
            {v: names for v in VENUES}, "1m", lambda *a: None, ccxt_config=_config(servers),
            config=FAST,
        )  # fmt: skip
        cs.start()
        await _until(lambda: all(cs.live(m, v) for m in names for v in VENUES), 5.0)
        await asyncio.sleep(0.2)
        await cs.aclose()
        return cs

    try:
        asyncio.run(watch(10))
        sizes = {v: [len(a) for _, a in ws.subscribes] for v, (_, ws) in servers.items()}
        assert sizes == {"binance": [25], "bybit": [10, 10, 5], "okx": [25]}, sizes
        assert not any(ws.refused for _, ws in servers.values())
        for _, ws in servers.values():
            ws.subscribes.clear()
        cs = asyncio.run(watch(25))
        refused = servers["bybit"][1].refused  # once per attempt: the stream retries
        assert refused and set(refused) == {"25 args in one request"}
        assert not servers["bybit"][1].ready()
        assert not any(cs.live(m, "bybit") for m in names)
    finally:
        for rx, ws in servers.values():
            ws.stop()
            rx.stop()


def test_bad_options(servers: Servers, clock: ManualClock, tmp_path: Path):
    with pytest.raises(ConfigError, match="candle_streams"):
        _provider(servers, clock, tmp_path, candle_streams=("gate",))
    with pytest.raises(ConfigError, match="candle_streams"):
        _provider(servers, clock, tmp_path, candle_streams="binance")
    p = _provider(servers, clock, tmp_path, candle_streams=("bybit",))
    with pytest.raises(ConfigError, match="not a streamed feed"):
        p.ingest_candles("QAAA", "okx", pd.DataFrame())
    with pytest.raises(ConfigError, match="missing columns"):
        p.ingest_candles("QAAA", "bybit", pd.DataFrame({"date": []}))


def test_binance_combined_stream(servers: Servers, clock: ManualClock, tmp_path: Path):
    """Binance's combined-stream path (events wrapped ``{"stream", "data"}``) works the same."""

    async def run() -> None:
        cfg = _config(servers)
        ws_base = cfg["binance"]["urls"]["api"]["ws"]["linear"].rsplit("/ws", 1)[0]
        cfg["binance"]["urls"]["api"]["ws"]["linear"] = f"{ws_base}/stream"
        p = MapProvider(
            [MarketSpec(m, ("binance",), "1m") for m in MARKETS],
            config=MapConfig(step=None, step_bps=10.0),
            datadir=tmp_path,
            ccxt_config={"binance": cfg["binance"]},
            history_bars=HISTORY,
            clock=clock,
            retry=RETRY,
            history_limits=False,
            stream_config=FAST,
            candle_streams=("binance",),
        )
        try:
            await p.refresh()
            assert await _until(lambda: _live(p, ("binance",)))
            conns = list(servers["binance"][1]._conns)
            assert conns and all(c.path.startswith("/stream") for c in conns)
            servers["binance"][0].clear_log()
            reports = await _steps(p, clock, 2)
            assert all(sum(r.new_bars.values()) == len(MARKETS) for r in reports)
            assert p.stream_bars["binance"] == 2 * len(MARKETS)
            assert _candle_requests(servers)["binance"] == 0
        finally:
            await p.aclose()

    asyncio.run(run())


def test_bar_late_on_a_live_stream_comes_over_rest(
    servers: Servers, clock: ManualClock, tmp_path: Path
):
    """Bybit's connection stays open but sends nothing (not yet seen as a stall): the refresh
    waits ``stream_grace_s`` for the bar, then fetches it over REST; the others stream."""

    async def run() -> None:
        p = _provider(servers, clock, tmp_path)
        p.stream_grace_s = 0.3
        try:
            await p.refresh()
            assert await _until(lambda: _live(p))
            servers["bybit"][1].stall()
            before = p.stream_backfills["bybit"]  # the fill counted one per feed
            for rx, _ in servers.values():
                rx.clear_log()
            t0 = time.monotonic()
            (r,) = await _steps(p, clock, 1)
            assert time.monotonic() - t0 >= 0.3
            assert not r.errors and all(n == 1 for n in r.new_bars.values())
            assert p._candles_live("QAAA", "bybit")  # still looked healthy
            got = _candle_requests(servers)
            assert got["binance"] == 0 and got["okx"] == 0 and got["bybit"] >= len(MARKETS)
            assert p.stream_backfills["bybit"] - before == len(MARKETS)
        finally:
            await p.aclose()

    asyncio.run(run())


def test_bench_refresh_candles_ws_smoke(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench_refresh.py --candles ws`` on two markets: every promised figure is printed and
    the steady cycle takes its bars from the streams."""
    import re
    import sys

    bench = _bench()
    argv = ["bench_refresh.py", "--candles", "ws", "--markets", "2", "--cycles", "1",
            "--history-bars", "30", "--rate-limit-ms", "1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "errors 0" in out and "errors 1" not in out
    for pattern in (
        r"first fill \(2 markets, REST\): [0-9.]+ s",
        r"steady cycle \(median of 1, candles over the streams\): wall [0-9.]+ s",
        r"store [0-9.]+ s \+ engine [0-9.]+ ms = [0-9.]+% of the cycle",
        r"bars from the streams \{'binance': 2, 'bybit': 2, 'okx': 2\}",
        r"single-market steady cycle: wall [0-9.]+ s",
        r"ratios N / 1 market: wall x[0-9.]+ for x2 markets",
        r"peak resident memory of the process: [0-9]+ MiB",
    ):
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"
