"""One sweep run serially, with ``--jobs 2`` (loky) and on a 2-worker Dask LocalCluster.

Run: ``.venv/bin/python benchmarks/bench_sweep.py`` (``--sweep yardstick`` or ``forecast`` for
the other sweeps; ``--workers N`` for the parallel runs; ``--scale``: only the CPU time of one
calibration task on 2,174 and 8,696 bars). Everything runs offline on the bundled
datasets (btc_1h, btc_4h, eth_4h).

The default sweep is the walk-forward calibration of every bundled market
(``liqsignal.calibrate.calibration_tasks``: per market, one task per fold and one for the final
fit, the default search grid, 2 folds): 9 tasks. The serial run times each task (the per-task
times docs/sweeps.md scales to 500 markets); the parallel runs give the wall time and the
speed-up against the serial wall time of the same run, each twice: cold (new worker processes,
which import liqsignal and load the numba kernels from the on-disk cache inside the wall) and
warm (loky's reused processes, the same LocalCluster). All runs must give the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import pandas as pd

from liqsignal.calibrate import calibration_tasks
from liqsignal.config import MapConfig
from liqsignal.datasets import load_datasets
from liqsignal.sweep import Task, local_cluster, run_tasks
from liqsignal.yardstick import market_config, yardstick_tasks


def _tasks(kind: str) -> list[Task]:
    dss = load_datasets()
    if kind == "calibrate":
        tasks: list[Task] = []
        for ds in dss:
            cfg = market_config(MapConfig(), ds.symbol, float(ds.frame["close"].iloc[0]))
            tasks += calibration_tasks(ds.frame, cfg, folds=2, market=ds.name)
        return tasks
    if kind == "yardstick":
        return yardstick_tasks(None, dss, n_folds=3, boot=200, structure=True)
    from liqsignal.forecast import _walk_forward_tasks, market_features, training_frames

    data = market_features([(d.name, d.symbol, d.frame) for d in dss])
    rows = training_frames(data, 6)
    kw = {"horizon": 6, "pool": True, "target_precision": 0.2, "c": 0.01, "features": None}
    return [*_walk_forward_tasks(rows, 3, 200, "map", map_features=True, **kw),
            *_walk_forward_tasks(rows, 3, 200, "map_free", map_features=False, **kw)]  # fmt: skip


def _canon(results: list[Any]) -> str:
    def conv(x: Any) -> Any:
        if hasattr(x, "to_dict"):
            return x.to_dict()
        if isinstance(x, tuple | list):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {str(k): conv(v) for k, v in x.items()}
        if hasattr(x, "tolist"):
            return x.tolist()
        return x

    return json.dumps(conv(results), sort_keys=True, default=repr)


def _bars(t: Task) -> str:
    """Bars of the task's market (calibration and yardstick tasks), for scaling per-task times."""
    a = t.args[0] if t.args else None
    frame = getattr(a, "frame", a)
    return f"{len(frame)} bars" if hasattr(frame, "columns") else ""


def scale(copies: tuple[int, ...] = (1, 4)) -> None:
    """CPU time of one calibration fold task (2 folds, default grid) on the bundled btc_1h
    frame repeated end to end ``copies`` times (4 copies: 8,696 bars, about one year of 1h)."""
    from liqsignal.calibrate import fold_task
    from liqsignal.datasets import load_dataset

    base = load_dataset("btc_1h").frame
    span = base["date"].iloc[-1] - base["date"].iloc[0] + pd.Timedelta(hours=1)
    print("calibration fold task on btc_1h repeated end to end (CPU time scales the sweep):")
    for k in copies:
        df = pd.concat([base.assign(date=base["date"] + span * j) for j in range(k)],
                       ignore_index=True)  # fmt: skip
        t, c = time.perf_counter(), time.process_time()
        _, runs = fold_task(df, MapConfig(), 0, 2, 200)
        print(f"  {len(df):6d} bars: CPU {time.process_time() - c:.2f} s, wall "
              f"{time.perf_counter() - t:.2f} s, {runs} map runs")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", choices=("calibrate", "yardstick", "forecast"), default="calibrate")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", action="store_true", help="only the fold task on 1x and 4x bars")
    args = ap.parse_args()
    if args.scale:
        scale()
        return 0
    tasks = _tasks(args.sweep)
    n = len(tasks)
    print(f"sweep: {args.sweep}, {n} tasks, {os.cpu_count()} cores on this machine")

    # warm this process (numba cache load) so the serial run times only the tasks
    run_tasks(tasks[:1])

    per_task: list[float] = []
    cpu_task: list[float] = []
    last = [time.perf_counter(), time.process_time()]

    def clock(_i: int, _res: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        per_task.append(now - last[0])
        cpu_task.append(cpu - last[1])
        last[:] = [now, cpu]

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    last[:] = [t0, time.process_time()]
    serial = run_tasks(tasks, on_done=clock)
    wall_serial = time.perf_counter() - t0

    # each parallel run twice: cold (fresh worker processes import liqsignal and load the
    # kernels) and warm (loky reuses its processes; the same LocalCluster)
    walls_jobs = []
    for _ in range(2):
        t0 = time.perf_counter()
        jobs = run_tasks(tasks, jobs=args.workers)
        walls_jobs.append(time.perf_counter() - t0)

    walls_dask = []
    with local_cluster(args.workers) as cluster:
        for _ in range(2):
            t0 = time.perf_counter()
            dask = run_tasks(tasks, scheduler=cluster.scheduler_address)
            walls_dask.append(time.perf_counter() - t0)

    ref = _canon(serial)
    same = _canon(jobs) == ref and _canon(dask) == ref
    print("per-task time (serial run, this process): wall, CPU")
    for t, s, c in zip(tasks, per_task, cpu_task, strict=True):
        print(f"  {t.label:<22} {s:7.2f} s {c:7.2f} s  {_bars(t)}")
    for name, v in (("wall", per_task), ("CPU", cpu_task)):
        print(f"  {name}: mean {statistics.mean(v):.2f} s, median {statistics.median(v):.2f} s, "
              f"max {max(v):.2f} s, sum {sum(v):.1f} s")  # fmt: skip
    print(f"serial            wall {wall_serial:7.1f} s")
    for name, walls in ((f"--jobs {args.workers}", walls_jobs),
                        (f"LocalCluster x{args.workers}", walls_dask)):  # fmt: skip
        cells = ", ".join(
            f"{kind} {w:6.1f} s (speed-up {wall_serial / w:.2f}x)"
            for kind, w in zip(("cold", "warm"), walls, strict=True)
        )
        print(f"{name:<17} wall {cells}")
    print(f"same results in all three runs: {same}")
    print(
        f"load average (1 min) at the start {load0:.1f}, at the end {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (other processes share them: speed-ups need idle cores)"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
