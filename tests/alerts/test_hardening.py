"""Alert holes found by the fault campaign: a restart between "armed" and "consumed" keeps the
link to the pocket; a busy outbox is "busy" (not corrupt), never blocks the event loop, and an
alert is sent only once stored and only once; a damaged outbox is moved aside for a fresh one;
a foreign file is refused before anything in it changes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import run_liqsignal

from liqsignal.alerts.events import BarView, EventDetector, EventRules, Pocket
from liqsignal.alerts.message import Alert
from liqsignal.alerts.outbox import Outbox, OutboxBusyError
from liqsignal.alerts.service import AlertService
from liqsignal.exceptions import CorruptFileError

from .conftest import CHAT_A
from .fake_provider import FakeProvider, M, alert_config, cluster


def _service(provider, path: Path, make_sender) -> tuple[AlertService, Outbox]:
    """An alert service for chat A, without pictures, over the outbox at ``path``."""
    box = Outbox(path)
    sender = make_sender(chat_ids=[CHAT_A], outbox=box)
    svc = AlertService(
        provider, alert_config(chat_ids=(CHAT_A,), pictures=False), markets=[M], sender=sender
    )
    return svc, box


async def test_restart_between_armed_and_consumed_still_reports_the_hit(make_sender, tmp_path, api):
    provider = FakeProvider()
    path = tmp_path / "outbox.sqlite"
    svc1, box1 = _service(provider, path, make_sender)
    provider.add_bar(armed=cluster())
    await svc1.tick()
    assert [e.kind for e in svc1.last_tick.events] == ["armed"]
    await svc1.aclose()
    box1.close()

    svc2, box2 = _service(provider, path, make_sender)  # the restart
    await svc2.start()
    # price trades down through the armed pocket (86,450-86,600); no flush
    provider.add_bar(low=86_400.0, high=87_000.0, close=86_500.0, pred_long=3e6, flush=0)
    res = await svc2.tick()
    kinds = [e.kind for e in res.events]
    assert kinds == ["consumed"], kinds
    assert res.events[0].pocket is not None and res.events[0].pocket.low == 86_450.0
    texts = [c.params.get("text", "") for c in api.calls_to("sendMessage")]
    assert sum("consumed" in t.lower() or "liquidat" in t.lower() for t in texts) >= 1
    # the same hit is never reported again, even after another restart
    await svc2.aclose()
    box2.close()
    svc3, box3 = _service(provider, path, make_sender)
    await svc3.start()
    provider.add_bar(low=86_300.0, high=86_900.0, close=86_400.0, pred_long=1e6, flush=0)
    res3 = await svc3.tick()
    assert [e.kind for e in res3.events] == []
    assert box3.counts()["sent"] == 2
    await svc3.aclose()
    box3.close()


def test_detector_restores_the_tracked_pocket_from_its_state():
    T0 = datetime(2026, 1, 29, 10, tzinfo=UTC)
    p = Pocket("long", 86_450.0, 86_600.0, 86_525.0, 5e6, -0.5, 3, 1.2e7, {"binance": 1.0})

    def bar(i, **kw):
        base = {"armed": {}, "consumed_usd": {"long": 0.0, "short": 0.0}, "flush": 0}
        base.update(kw)
        low, high = base.pop("low", 86_900.0), base.pop("high", 87_100.0)
        return BarView(M, T0 + i * timedelta(hours=1), 87_000.0, low, high, **base)

    rules = EventRules(cooldown_s=3600 * 10)
    det = EventDetector(rules)
    armed = det.observe(bar(0, armed={"long": p}))
    state = det.tracked_state(M, "long")
    assert state is not None
    hit = bar(1, low=86_400.0, consumed_usd={"long": 2e6, "short": 0.0})
    without_restart = [e.key for e in det.observe(hit)]
    assert without_restart and without_restart[0].startswith(f"consumed|{M}|long|b")

    keys_only = EventDetector(rules)
    keys_only.restore([armed[0].key])
    assert keys_only.observe(hit) == []  # the hole: keys alone lose the pocket
    restored = EventDetector(rules)
    restored.restore([armed[0].key], tracked=[state])
    assert [e.key for e in restored.observe(hit)] == without_restart
    # a consumed already stored ends the tracking: no second report after a restart
    again = EventDetector(rules)
    again.restore([armed[0].key, without_restart[0]], tracked=[state])
    assert again.observe(bar(2, low=86_300.0, consumed_usd={"long": 2e6, "short": 0.0})) == []


class Holder:
    """Another process's write transaction on the outbox file (its own SQLite connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.go = threading.Event()
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        self.held.set()
        self.go.wait(30)
        conn.execute("ROLLBACK")
        conn.close()

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.go.set()
        self.thread.join(10)


def _alert(key: str = "armed|BTC/USDT:USDT|long|b1|2026-01-29T10:00:00Z") -> Alert:
    return Alert(key=key, kind="armed", market=M, text="<b>pocket</b>", side="long")


def test_busy_outbox_says_busy_not_corrupt_and_changes_nothing(tmp_path):
    path = tmp_path / "alerts.sqlite"
    Outbox(path).close()
    with Holder(path):
        box = Outbox(path, busy_timeout_s=0.2)  # opening a WAL outbox needs no write lock
        t0 = time.monotonic()
        with pytest.raises(OutboxBusyError, match=r"is busy: another process holds a write"):
            box.enqueue(_alert())
        assert time.monotonic() - t0 < 2.0
        assert not box.has_key(_alert().key)
    box.enqueue(_alert())
    assert box.counts()["pending"] == 1
    assert not list(tmp_path.glob("*.damaged-*"))
    box.close()


async def test_notify_on_a_busy_outbox_neither_blocks_nor_sends_unstored_nor_twice(
    make_sender, tmp_path, api
):
    path = tmp_path / "alerts.sqlite"
    box = Outbox(path, busy_timeout_s=0.3)
    sender = make_sender(chat_ids=[CHAT_A], outbox=box)
    await sender.start()
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.02)

    hb = asyncio.create_task(heartbeat())
    with Holder(path):
        t0 = time.monotonic()
        res = await sender.notify(_alert())
        took = time.monotonic() - t0
        res2 = await sender.notify(_alert())  # the same key again, still busy
    assert took < 2.0
    assert beats >= 5  # the loop kept running while SQLite waited (in a thread)
    assert api.calls_to("sendMessage") == []  # nothing sent that was not stored
    assert [r.alert_key for r in res.pending] == [_alert().key]
    assert res.stopped_early and "busy" in res.stopped_early
    assert res2.remaining == 1
    res3 = await sender.notify(_alert())  # free again: stored, then sent once
    hb.cancel()
    assert [r.alert_key for r in res3.sent] == [_alert().key]
    await sender.notify(_alert())
    await sender.flush()
    assert len(api.calls_to("sendMessage")) == 1
    assert box.counts() == {"pending": 0, "sent": 1, "failed": 0}
    box.close()


def _damage(path: Path) -> None:
    """Overwrite one table page (not the header page) with garbage, as a bad disk would."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 3 * page
    data[2 * page : 3 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))


def test_damaged_outbox_is_moved_aside_and_a_fresh_one_takes_over(tmp_path, caplog):
    path = tmp_path / "alerts.sqlite"
    box = Outbox(path)
    for i in range(30):
        box.enqueue(_alert(f"armed|{M}|long|b{i}|2026-01-29T10:00:00Z"))
    box._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    _damage(path)
    damaged = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="liqsignal.alerts.outbox"):
        fresh = Outbox(path)
    assert fresh.moved_damaged_to is not None
    assert fresh.moved_damaged_to.read_bytes() == damaged  # kept, unchanged
    assert "is damaged" in caplog.text and str(fresh.moved_damaged_to) in caplog.text
    assert fresh.pending() == []
    fresh.enqueue(_alert())  # new alerts go into the fresh file
    assert fresh.counts()["pending"] == 1
    fresh.close()


def test_damage_found_by_a_statement_later_also_moves_to_a_fresh_file(tmp_path, caplog):
    path = tmp_path / "alerts.sqlite"
    box = Outbox(path)
    for i in range(30):
        box.enqueue(_alert(f"armed|{M}|long|b{i}|2026-01-29T10:00:00Z"))

    class Broken:
        def execute(self, *a, **k):
            raise sqlite3.DatabaseError("database disk image is malformed")

        def close(self):
            pass

    real = box._conn
    box._conn = Broken()  # type: ignore[assignment]
    real.close()
    with caplog.at_level(logging.ERROR, logger="liqsignal.alerts.outbox"):
        assert box.pending() == []  # not a raw sqlite3 error on every tick
    assert box.moved_damaged_to is not None and "is damaged" in caplog.text
    box.enqueue(_alert())
    assert box.counts()["pending"] == 1
    box.close()


def test_foreign_sqlite_file_is_refused_before_anything_changes(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CorruptFileError, match=r"another program's SQLite database"):
        Outbox(path)
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()
    assert not Path(f"{path}-wal").exists()


def test_a_text_file_is_refused_unchanged(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    with pytest.raises(CorruptFileError, match=r"not a SQLite database"):
        Outbox(path)
    assert path.read_text() == "not a database\n"


def test_version_1_outbox_is_upgraded_in_place_keeping_its_alerts(tmp_path):
    path = tmp_path / "v1.sqlite"
    box = Outbox(path)
    box.enqueue(_alert())
    box._conn.execute("DROP TABLE tracked")
    box._conn.execute("PRAGMA user_version = 1")
    box.close()
    box = Outbox(path)
    assert box.has_key(_alert().key)
    box.save_tracked(M, "long", {"market": M, "side": "long"})
    assert box.tracked() == [{"market": M, "side": "long"}]
    box.save_tracked(M, "long", None)
    assert box.tracked() == []
    box.close()


async def test_shutdown_during_a_flood_wait_is_prompt_and_logs_no_error(
    make_sender, tmp_path, api, caplog
):
    from liqsignal.alerts.telegram import RetryPolicy

    from .fake_botapi import Fault

    provider = FakeProvider()
    box = Outbox(tmp_path / "flood.sqlite")
    slow = RetryPolicy(attempts=3, backoff_base=0.01, max_retry_after_total=120.0)
    sender = make_sender(chat_ids=[CHAT_A], outbox=box, retry=slow, sleep=asyncio.sleep)
    svc = AlertService(
        provider, alert_config(chat_ids=(CHAT_A,), pictures=False), markets=[M], sender=sender
    )
    api.fail("sendMessage", Fault.retry_after(60), times=5)
    provider.add_bar(armed=cluster())
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop, install_signals=False))
    for _ in range(200):  # until Telegram has asked to wait 60 s
        await asyncio.sleep(0.02)
        if api.attempts_of("sendMessage"):
            break
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    stop.set()  # what SIGTERM does
    await asyncio.wait_for(task, 15)
    assert time.monotonic() - t0 < 12
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert "CancelledError" not in caplog.text
    reopened = Outbox(tmp_path / "flood.sqlite")
    assert reopened.counts()["pending"] == 1  # kept for the next start
    reopened.close()


async def test_getupdates_outage_backs_off(make_sender, api, caplog):
    from .fake_botapi import Fault

    sender = make_sender(chat_ids=[CHAT_A])
    await sender.start()
    api.fail("getUpdates", Fault.status(502), times=10_000)
    assert sender.start_polling(None, interval=0.02, long_poll=0) is None
    await asyncio.sleep(1.5)
    await sender.stop_polling()
    tries = len(api.attempts_of("getUpdates"))
    # without backoff: one try per 0.02 s (about 75); doubling waits: about log2(75)
    assert 3 <= tries <= 12, tries
    warnings = [r for r in caplog.records if "getUpdates failed" in r.getMessage()]
    assert len(warnings) <= 4
    assert sender.poll_backoff_s(1.0) <= 300.0


def test_clusters_text_signs_distances_as_the_alerts_do():
    from liqsignal.engine import Cluster, MapSnapshot

    class P(FakeProvider):
        def snapshot(self, market, scan_range_pct=None):
            snap = super().snapshot(market)
            below = Cluster("long", 83_300.0, 83_200.0, 83_400.0, 4e6, 4.2, 2, 7e6, {})
            above = Cluster("short", 88_700.0, 88_600.0, 88_800.0, 3e6, 1.9, 1, 3e6, {})
            return MapSnapshot(snap.time, snap.price, snap.levels, [below, above])

    svc = AlertService(P(), alert_config(chat_ids=(CHAT_A,)), markets=[M], sender=object())
    text = svc.clusters_text(M)
    assert "\u22124.2%" in text and "+4.2" not in text  # a typographic minus, as in alerts
    assert "+1.9" in text


async def test_a_market_whose_map_is_empty_is_warned_about_once(make_sender, outbox, caplog):
    class Empty(FakeProvider):
        def snapshot(self, market, scan_range_pct=None):
            snap = super().snapshot(market)
            return type(snap)(snap.time, snap.price, snap.levels.iloc[0:0], [])

    provider = Empty()
    svc = AlertService(
        provider,
        alert_config(chat_ids=(CHAT_A,), pictures=False),
        markets=[M],
        sender=make_sender(chat_ids=[CHAT_A], outbox=outbox),
    )
    for _ in range(3):
        provider.add_bar()
        await svc.tick()
    lines = [r for r in caplog.records if "holds no levels" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert M in lines[0].getMessage()
    await svc.aclose()


def test_each_market_gets_its_engine_and_a_grid_that_suits_its_price():
    import numpy as np

    from liqsignal.config import alert_settings
    from liqsignal.engine import LiquidationMap

    cfg = {
        "exchange": {"name": "binance"},
        "liqsignal": {
            "engine": {},
            "alerts": {
                "markets": ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"],
                "market_engines": {"SOL/USDT:USDT": {"step": None, "step_bps": 10}},
            },
        },
    }
    s = alert_settings(cfg)
    assert s.engines["BTC/USDT:USDT"].step == 50.0
    assert s.engines["SOL/USDT:USDT"].step_bps == 10
    # ETH at about 2,300 USD with the default 50 USD step: the map uses a relative grid
    eth = LiquidationMap(s.engines["ETH/USDT:USDT"])
    x = np.full((3, 1, 8), np.nan)
    x[:, 0, :6] = [2300.0, 2310.0, 2290.0, 2305.0, 1e4, 1e6]
    eth.update(np.array([0.0, 3600.0, 7200.0]) + 1.7e9, x)
    assert eth.config.step is None and eth.config.step_bps is not None
    bad = {**cfg, "liqsignal": {"alerts": {"markets": ["BTC/USDT:USDT"]}}}
    bad["liqsignal"]["alerts"]["market_engines"] = {"DOGE/USDT:USDT": {}}
    with pytest.raises(Exception, match=r"liqsignal.alerts.market_engines"):
        alert_settings(bad)
    bad["liqsignal"]["alerts"]["market_engines"] = {"BTC/USDT:USDT": {"n_bins": 10**9}}
    with pytest.raises(Exception, match=r"market_engines\['BTC/USDT:USDT'\].*n_bins"):
        alert_settings(bad)


async def test_one_slow_venue_does_not_delay_the_round(tmp_path):
    from liqsignal.data.provider import MapProvider, MarketSpec

    prov = MapProvider(
        [MarketSpec("BTC/USDT:USDT", ("binance", "bybit"), "1h")],
        datadir=tmp_path,
        feed_timeout_s=0.5,
    )

    async def slow(market):
        await asyncio.sleep(30)  # a venue answering in 30 s

    async def fails(market):
        from liqsignal.exceptions import TemporaryDataError

        raise TemporaryDataError("binance: connection refused")

    prov._clients["bybit"].symbol = slow  # type: ignore[method-assign]
    prov._clients["binance"].symbol = fails  # type: ignore[method-assign]
    t0 = time.monotonic()
    report = await prov.refresh()
    took = time.monotonic() - t0
    await prov.aclose()
    assert took < 3.0
    assert "no answer within 0.5 s" in report.errors[("BTC/USDT:USDT", "bybit")]
    assert "connection refused" in report.errors[("BTC/USDT:USDT", "binance")]
    assert ("BTC/USDT:USDT", "bybit") in report.became_stale


def test_once_exits_1_when_telegram_cannot_be_reached(tmp_path):
    import json
    import os
    import socket

    from .conftest import TOKEN

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {
        "exchange": {"name": "binance"},
        "liqsignal": {
            "alerts": {
                "markets": ["BTC/USDT:USDT"],
                "chat_ids": [CHAT_A],
                "base_url": f"http://127.0.0.1:{port}/bot",
                "base_file_url": f"http://127.0.0.1:{port}/file/bot",
                "outbox": str(tmp_path / "o.sqlite"),
                "datadir": str(tmp_path / "data"),
                "venue_timeout_s": 3,
                "ccxt_config": {"binance": {"hostname": f"127.0.0.1:{port}"}},
            }
        },
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, LIQSIGNAL_TELEGRAM_TOKEN=TOKEN)
    r = run_liqsignal("alerts", "--config", str(path), "--once", timeout=120, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr[-2000:])
    assert "Telegram could not be reached" in r.stderr
    assert "Traceback" not in r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert " WARNING " in r.stderr or " INFO " in r.stderr  # logging is set up
