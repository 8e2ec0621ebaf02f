"""Sweeps (liqsignal.sweep): serial, ``--jobs`` (loky) and a Dask LocalCluster on 127.0.0.1 give
the same tables; a killed worker's task is rerun and counted once; a task that raised is retried;
a bad ``--scheduler`` is named in a clear error within a timeout."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from liqsignal.calibrate import calibrate
from liqsignal.cli import main
from liqsignal.datasets import load_datasets
from liqsignal.exceptions import ConfigError
from liqsignal.sweep import Task, local_cluster, results_table, run_tasks
from liqsignal.yardstick import yardstick

if os.environ.get("CI") and importlib.util.find_spec("distributed") is None:
    raise ImportError("CI installs liqsignal[cluster]: dask's distributed is missing")
distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (a dependency of distributed)

# the toy tasks below live in this test module, which the workers cannot import: ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SMALL_GRID: dict[str, tuple[Any, ...]] = {
    "half_life_hours": (24.0, 96.0),
    "entry_spread": (0.5, 1.0),
}


def _square(i: int, delay: float, log: str) -> dict[str, Any]:
    """A toy task: records each start (one line per execution) and returns ``i * i``."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{i} {os.getpid()}\n")
    time.sleep(delay)
    return {"square": i * i, "half": i / 2}


def _fails_once(i: int, marker: str) -> dict[str, Any]:
    """Raises on its first execution (no marker file yet), succeeds on the next."""
    p = Path(marker)
    if not p.exists():
        p.write_text("ran\n")
        raise RuntimeError(f"task {i}: first attempt fails")
    return {"i": i}


def _read(path: str, log: str) -> pd.DataFrame:
    """An input task: reads a file every worker can see (counted per execution)."""
    with open(log, "a", encoding="utf-8") as f:
        f.write("read\n")
    return pd.read_csv(path)


def _window_sum(frame: pd.DataFrame, start: int, stop: int) -> dict[str, Any]:
    return {"sum": float(frame["x"].iloc[start:stop].sum()), "rows": len(frame)}


def _thread_env() -> dict[str, Any]:
    from threadpoolctl import threadpool_info

    return {
        "env": {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")},
        "pools": sorted({p["num_threads"] for p in threadpool_info()}),
    }


@pytest.fixture(scope="module")
def cluster() -> Any:
    with local_cluster(2) as c:
        yield c


def _toy(n: int, delay: float, log: Path) -> list[Task]:
    return [Task((f"m{i % 3}", i), _square, (i, delay, str(log))) for i in range(n)]


def test_the_three_modes_give_one_table(tmp_path: Path, cluster: Any) -> None:
    tasks = _toy(7, 0.0, tmp_path / "log")
    serial = results_table(tasks, run_tasks(tasks), ["market", "task"])
    jobs = results_table(tasks, run_tasks(tasks, jobs=2), ["market", "task"])
    dask = results_table(tasks, run_tasks(tasks, scheduler=cluster.scheduler_address),
                         ["market", "task"])  # fmt: skip
    assert list(serial.columns) == ["market", "task", "square", "half"]
    assert serial["market"].tolist() == ["m0", "m0", "m0", "m1", "m1", "m2", "m2"]
    assert serial["square"].tolist() == [0, 9, 36, 1, 16, 4, 25]
    pd.testing.assert_frame_equal(serial, jobs, check_exact=True)
    pd.testing.assert_frame_equal(serial, dask, check_exact=True)


def test_an_input_task_reads_the_shared_path_once_per_run(tmp_path: Path, cluster: Any) -> None:
    path = tmp_path / "market.csv"
    pd.DataFrame({"x": [float(v) for v in range(10)]}).to_csv(path, index=False)
    tables = []
    for mode in ({}, {"jobs": 2}, {"scheduler": cluster.scheduler_address}):
        log = tmp_path / f"reads-{len(tables)}.log"
        load = Task(("m",), _read, (str(path), str(log)))
        tasks = [Task(("m", k), _window_sum, (load, 2 * k, 2 * k + 2)) for k in range(5)]
        tables.append(results_table(tasks, run_tasks(tasks, **mode), ["market", "window"]))
        assert log.read_text() == "read\n", mode  # one read for the five tasks
    assert tables[0]["sum"].tolist() == [1.0, 5.0, 9.0, 13.0, 17.0]
    for t in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], t, check_exact=True)


def test_workers_run_one_thread_each(cluster: Any) -> None:
    tasks = [Task(("m", i), _thread_env) for i in range(2)]
    one = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    for res in (run_tasks(tasks, jobs=2), run_tasks(tasks, scheduler=cluster.scheduler_address)):
        assert all(r["env"] == one for r in res), res
        assert all(r["pools"] in ([], [1]) for r in res), res  # BLAS/OpenMP pools held to 1
    assert all(r["pools"] in ([], [1]) for r in run_tasks(tasks))  # and in this process


def test_calibration_on_the_cluster_equals_the_serial_run(coinglass: pd.DataFrame,
                                                          cluster: Any) -> None:  # fmt: skip
    kw: dict[str, Any] = {"folds": 2, "rounds": 1, "grid": SMALL_GRID}
    serial = calibrate(coinglass, **kw).to_dict()
    seen: list[tuple[int, int]] = []
    dask = calibrate(
        coinglass, scheduler=cluster.scheduler_address, progress=lambda d, t: seen.append((d, t)),
        **kw,
    ).to_dict()  # fmt: skip
    serial.pop("seconds")
    dask.pop("seconds")
    assert json.dumps(serial, sort_keys=True) == json.dumps(dask, sort_keys=True)
    assert serial["evaluations"] == 19  # (1 + 4) runs per fit x 3 fits + 2 test runs x 2 folds
    assert seen[-1] == (19, 19) and len(seen) == 3  # one update per finished task


def test_yardstick_on_the_cluster_and_with_jobs_equals_the_serial_run(cluster: Any) -> None:
    dss = load_datasets(["btc_4h", "eth_4h"])
    kw: dict[str, Any] = {"n_folds": 2, "boot": 20, "structure": False}
    serial = yardstick(None, dss, **kw)
    dask = yardstick(None, dss, scheduler=cluster.scheduler_address, **kw)
    assert [d["dataset"] for d in dask["datasets"]] == ["btc_4h", "eth_4h"]
    assert json.dumps(serial, sort_keys=True) == json.dumps(dask, sort_keys=True)


@pytest.mark.slow
def test_jobs_2_equals_serial_for_calibrate_yardstick_and_forecast(
    coinglass: pd.DataFrame,
) -> None:
    from liqsignal.forecast import forecast_report, report_json

    kw: dict[str, Any] = {"folds": 2, "rounds": 1, "grid": SMALL_GRID}
    a = calibrate(coinglass, **kw).to_dict()
    b = calibrate(coinglass, jobs=2, **kw).to_dict()
    a.pop("seconds")
    b.pop("seconds")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    dss = load_datasets(["btc_4h", "eth_4h"])
    ykw: dict[str, Any] = {"n_folds": 2, "boot": 20, "structure": False}
    assert json.dumps(yardstick(None, dss, **ykw), sort_keys=True) == json.dumps(
        yardstick(None, dss, jobs=2, **ykw), sort_keys=True
    )
    fa = json.dumps(report_json(forecast_report()), sort_keys=True, default=str)
    fb = json.dumps(report_json(forecast_report(jobs=2)), sort_keys=True, default=str)
    assert fa == fb


def test_a_worker_killed_mid_sweep_is_rerun_and_counted_once(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    tasks = _toy(8, 0.8, log)
    with local_cluster(2) as c:
        finished: set[int] = set()
        killed: list[int] = []

        def kill_one(i: int, _res: Any) -> None:
            finished.add(i)
            if killed:
                return
            # kill the process of a task that has started and not finished
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for line in log.read_text().splitlines():
                    task, pid = (int(v) for v in line.split())
                    if task not in finished:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                time.sleep(0.02)

        res = run_tasks(tasks, scheduler=c.scheduler_address, on_done=kill_one)
    assert killed
    table = results_table(tasks, res, ["market", "task"])
    assert sorted(table["task"]) == list(range(8))  # every task once, none twice
    assert table.set_index("task")["square"].to_dict() == {i: i * i for i in range(8)}
    starts = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert set(starts) == set(range(8))
    # the task the killed worker was running started again on a live worker
    assert len(starts) > 8, starts
    rerun = [i for i in set(starts) if starts.count(i) > 1]
    pid_of = [line.split() for line in log.read_text().splitlines()]
    assert any(int(p) == killed[0] for i, p in pid_of if int(i) in rerun)


def test_a_task_that_raised_is_retried_on_the_cluster(tmp_path: Path, cluster: Any) -> None:
    tasks = [Task(("m", i), _fails_once, (i, str(tmp_path / f"mark{i}"))) for i in range(3)]
    res = run_tasks(tasks, scheduler=cluster.scheduler_address, retries=1)
    assert res == [{"i": 0}, {"i": 1}, {"i": 2}]
    again = [Task(("m", 9), _fails_once, (9, str(tmp_path / "mark9")))]
    with pytest.raises(RuntimeError, match="first attempt fails") as exc:
        run_tasks(again, scheduler=cluster.scheduler_address, retries=0)
    assert any("sweep task m/9" in n for n in exc.value.__notes__)


def test_a_local_task_error_keeps_its_type_and_names_the_task(tmp_path: Path) -> None:
    tasks = [Task(("btc", 1), _fails_once, (1, str(tmp_path / "x")))]
    with pytest.raises(RuntimeError, match="first attempt") as exc:
        run_tasks(tasks)
    assert exc.value.__notes__ == ["in sweep task btc/1"]


def test_an_unreachable_scheduler_is_named_within_the_timeout() -> None:
    tasks = [Task(("m", 0), _square, (0, 0.0, os.devnull))]
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"tcp://127\.0\.0\.1:9 within 2 s"):
        run_tasks(tasks, scheduler="tcp://127.0.0.1:9", connect_timeout=2)
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    ("jobs", "scheduler", "match"),
    [
        (0, None, r"--jobs must be a whole number >= 1, got 0"),
        (2, "tcp://127.0.0.1:8786", r"not both \(--jobs 2 --scheduler tcp://127.0.0.1:8786\)"),
        (1, "127.0.0.1:8786", r"--scheduler '127.0.0.1:8786' is not a Dask scheduler address"),
    ],
)
def test_bad_sweep_settings_are_named(jobs: int, scheduler: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_tasks([], jobs=jobs, scheduler=scheduler)


def test_cli_bad_scheduler_exits_with_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import liqsignal.sweep as sweep

    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 2.0)
    t0 = time.monotonic()
    rc = main(["calibrate", "--scheduler", "tcp://127.0.0.1:9", "--out",
               str(tmp_path / "c.json"), "--json"])  # fmt: skip
    assert rc != 0
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "c.json").exists()


def test_workers_load_the_kernels_from_the_disk_cache() -> None:
    """After a sweep, each fresh worker's kernels came from numba's on-disk cache (no compile)
    and its thread settings are the sweep's."""
    dss = load_datasets(["btc_4h"])
    kw: dict[str, Any] = {"n_folds": 2, "boot": 0, "structure": False}
    yardstick(None, dss, **kw)  # here first: the kernels are compiled and cached on disk
    with local_cluster(2) as cluster:
        yardstick(None, dss, scheduler=cluster.scheduler_address, **kw)
        info = _probe_workers(cluster.scheduler_address)
    ran = [v for v in info.values() if v["hits"] or v["misses"]]
    assert ran, info
    for v in ran:
        assert v["cache_enabled"] and v["misses"] == 0 and v["hits"] > 0, info
    assert all(v["numba_threads"] == "1" for v in info.values())


def _probe_workers(address: str) -> dict[str, Any]:
    def probe() -> dict[str, Any]:
        from liqsignal import nb

        kernels = [v for v in vars(nb).values() if hasattr(v, "stats") and hasattr(v, "_cache")]
        used = [k for k in kernels if k.signatures]
        return {
            "cache_enabled": all(type(k._cache).__name__ != "NullCache" for k in kernels),
            "misses": sum(sum(k.stats.cache_misses.values()) for k in used),
            "hits": sum(sum(k.stats.cache_hits.values()) for k in used),
            "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
        }

    with distributed.Client(address) as client:
        return client.run(probe)


@pytest.mark.parametrize("command", ["calibrate", "evaluate", "fit"])
def test_cli_bad_jobs_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"calibrate": ["--out", str(tmp_path / "c.json")],
             "evaluate": ["--gate-only", "--boot", "0", "--no-structure"],
             "fit": ["--bundled", "--report"]}[command]  # fmt: skip
    rc = main([command, "--jobs", "0", *extra])
    assert rc != 0
    assert "--jobs must be a whole number >= 1, got 0" in capsys.readouterr().err
