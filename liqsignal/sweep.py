"""Run independent tasks (one per market, fold or side) serially, in local processes or on Dask.

A sweep is a list of :class:`Task`: a module-level function with its arguments, all picklable,
and a ``key`` naming the task (``("btc_1h", 2)``: dataset and fold). :func:`run_tasks` runs them

- serially (``jobs=1``, no scheduler): in this process, in order;
- in ``jobs`` local processes through joblib's loky backend (the one Freqtrade's hyperopt uses);
- on a Dask distributed cluster (``scheduler="tcp://HOST:8786"``) with Dask's own machinery:
  ``Client.submit`` futures, ``as_completed``, ``retries=`` for a task that raised, and the
  scheduler's rescheduling of the tasks of a worker that died.

Inputs reach the tasks in one of two ways. A frame passed as an argument travels with its task;
a frame several tasks share (one market's folds) is sent once, as a Dask task of its own that
the scheduler can run again if the worker holding it dies. A :class:`Task` passed as an argument
is an *input task* (``Task((name,), read_user_data, (path,))``): it runs once, on a worker on
Dask (reading the store from a path every worker shares), in this process locally, and its
result is the argument (an input task's own arguments are plain values).

Results come back in task order whatever the mode and whichever worker finished first, so a
serial and a parallel run give the same list and :func:`results_table` the same table, row for
row. Every task runs with BLAS/OpenMP pools limited to one thread (threadpoolctl), in every
mode, so a task computes exactly the same numbers wherever it runs and ``jobs`` processes never
oversubscribe the cores. Workers' own numba settings: the kernels are compiled with
``cache=True``, so a worker loads them from the on-disk cache beside ``liqsignal/nb.py`` (or
``NUMBA_CACHE_DIR``) instead of compiling; :data:`WORKER_ENV` lists the thread variables to give
worker processes (joblib sets them for its own workers; :func:`local_cluster` passes them to
Dask's).

Dask is optional: ``pip install 'liqsignal[cluster]'``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from liqsignal.exceptions import ConfigError

__all__ = [
    "WORKER_ENV",
    "Task",
    "add_sweep_arguments",
    "call_limited",
    "local_cluster",
    "results_table",
    "run_tasks",
]

#: Thread settings for worker processes: one thread each for numba, OpenMP and the BLAS pools
#: (the sweep's parallelism is across processes; the kernels are single-threaded).
WORKER_ENV: dict[str, str] = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT_S = 10.0

_INSTALL_HINT = (
    "--scheduler needs Dask's distributed scheduler: pip install 'liqsignal[cluster]' "
    "(or pip install 'dask[distributed]')"
)


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: ``fn(*args, **kwargs)``; ``fn`` must be a module-level function
    (pickled by reference), the arguments picklable. ``key`` names the task in errors and gives
    the key columns of :func:`results_table`."""

    key: tuple[Any, ...]
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "/".join(str(k) for k in self.key)


def call_limited(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` (one task) with the thread pools limited to one thread (every mode)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it the pools stay as they are
        return fn(*args, **kwargs)
    with threadpool_limits(limits=1):
        return fn(*args, **kwargs)


def _check(jobs: int, scheduler: str | None) -> None:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    if scheduler is not None and jobs != 1:
        raise ConfigError(
            f"give --jobs or --scheduler, not both (--jobs {jobs} --scheduler {scheduler}): "
            "on a cluster the workers set the parallelism"
        )
    if scheduler is not None and "://" not in scheduler:
        raise ConfigError(
            f"--scheduler {scheduler!r} is not a Dask scheduler address; expected "
            "PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        )


def run_tasks(
    tasks: Sequence[Task],
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    retries: int = 2,
    connect_timeout: float | None = None,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Each task's result, in the order of ``tasks``.

    ``jobs`` > 1: that many local loky processes; ``scheduler``: a Dask scheduler address
    (``retries``: how many times Dask reruns a task that raised; a task on a worker that died
    is rerun by the scheduler; ``connect_timeout``: seconds to reach it, default
    ``CONNECT_TIMEOUT_S``). ``on_done(i, result)`` is called once per task as it finishes
    (in task order locally, in finishing order on Dask). A task that raises (after its retries
    on Dask) raises its own error here, with a note naming the task. Bad ``jobs`` /
    ``scheduler`` values and an unreachable scheduler raise ``ConfigError`` naming them.
    """
    _check(jobs, scheduler)
    tasks = list(tasks)
    if scheduler is not None:
        timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
        return _run_dask(tasks, scheduler, retries, timeout, on_done)
    tasks = _resolve_inputs(tasks)
    if jobs == 1 or len(tasks) <= 1:
        out = []
        for i, t in enumerate(tasks):
            out.append(_guarded(t))
            if on_done is not None:
                on_done(i, out[-1])
        return out
    return _run_joblib(tasks, jobs, on_done)


def _resolve_inputs(tasks: list[Task]) -> list[Task]:
    """Locally: each input task (a ``Task`` argument) run once, its result in its place."""
    memo: dict[int, Any] = {}

    def val(v: Any) -> Any:
        if not isinstance(v, Task):
            return v
        if id(v) not in memo:
            memo[id(v)] = _guarded(_resolve_inputs([v])[0])
        return memo[id(v)]

    return [
        Task(t.key, t.fn, tuple(val(a) for a in t.args), {k: val(v) for k, v in t.kwargs.items()})
        for t in tasks
    ]


def _guarded(t: Task) -> Any:
    try:
        return call_limited(t.fn, *t.args, **t.kwargs)
    except Exception as e:
        e.add_note(f"in sweep task {t.label}")
        raise


def _run_joblib(
    tasks: list[Task], jobs: int, on_done: Callable[[int, Any], None] | None
) -> list[Any]:
    from joblib import Parallel, delayed, parallel_config

    # loky gives each worker process cpu_count // jobs threads in the variables of WORKER_ENV
    # (NUMBA_NUM_THREADS among them); inner_max_num_threads=1 makes that one
    with parallel_config(backend="loky", inner_max_num_threads=1):
        gen = Parallel(n_jobs=jobs, return_as="generator")(delayed(_guarded)(t) for t in tasks)
        out = []
        for i, res in enumerate(gen):
            out.append(res)
            if on_done is not None:
                on_done(i, res)
    return out


def _shared_values(tasks: list[Task]) -> dict[int, Any]:
    """Input tasks, and frames (or objects holding frames) passed to more than one task, by
    ``id``."""
    seen: dict[int, tuple[Any, int]] = {}
    for t in tasks:
        for v in (*t.args, *t.kwargs.values()):
            if isinstance(v, Task) or _is_data(v):
                obj, n = seen.get(id(v), (v, 0))
                seen[id(v)] = (obj, n + 1)
    return {k: obj for k, (obj, n) in seen.items() if n > 1 or isinstance(obj, Task)}


def _identity(x: Any) -> Any:
    return x


def _is_data(v: Any) -> bool:
    import numpy as np

    if isinstance(v, pd.DataFrame | pd.Series | np.ndarray):
        return True
    if isinstance(v, list | tuple) and v and not isinstance(v[0], str | int | float):
        return True  # e.g. a list of per-market design rows
    return hasattr(v, "__dataclass_fields__") and any(
        isinstance(getattr(v, f, None), pd.DataFrame) for f in v.__dataclass_fields__
    )


def _connect(scheduler: str, timeout: float) -> Any:
    try:
        from distributed import Client
    except ImportError as e:
        raise ConfigError(_INSTALL_HINT) from e
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s "
            f"({type(e).__name__}: {e}); is `dask scheduler` running there and the port open?"
        ) from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--scheduler {scheduler!r}: not a usable address ({e})") from e


def _run_dask(
    tasks: list[Task],
    scheduler: str,
    retries: int,
    timeout: float,
    on_done: Callable[[int, Any], None] | None,
) -> list[Any]:
    from distributed import as_completed

    client = _connect(scheduler, timeout)
    try:
        run = uuid.uuid4().hex[:12]
        inputs: dict[int, Any] = {}
        for n, (k, obj) in enumerate(_shared_values(tasks).items()):
            # a task of its own (not scatter): the scheduler keeps how to make it again
            if isinstance(obj, Task):
                inputs[k] = client.submit(call_limited, obj.fn, *obj.args, **obj.kwargs,
                                          key=f"liqsignal-input-{run}-{n}", retries=retries,
                                          pure=False)  # fmt: skip
            else:
                inputs[k] = client.submit(_identity, obj, key=f"liqsignal-data-{run}-{n}",
                                          pure=False)  # fmt: skip

        def sub(v: Any) -> Any:
            return inputs.get(id(v), v) if isinstance(v, Task) or _is_data(v) else v

        futures = []
        for i, t in enumerate(tasks):
            futures.append(
                client.submit(
                    call_limited,
                    t.fn,
                    *(sub(a) for a in t.args),
                    **{k: sub(v) for k, v in t.kwargs.items()},
                    key=f"liqsignal-sweep-{run}-{i}",
                    retries=retries,
                    pure=False,
                )
            )
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(tasks)
        done = [False] * len(tasks)
        for fut in as_completed(futures, loop=client.loop):
            i = index[fut.key]
            if done[i]:  # as_completed yields each future once; kept as a guard
                continue
            if fut.status != "finished":
                err = fut.exception()
                assert isinstance(err, BaseException)
                err.add_note(f"in sweep task {tasks[i].label} (failed on the cluster, "
                             f"{retries} retries)")  # fmt: skip
                raise err
            out[i] = fut.result()
            done[i] = True
            if on_done is not None:
                on_done(i, out[i])
        return out
    finally:
        client.close()


def results_table(
    tasks: Sequence[Task], results: Sequence[Any], key_names: Sequence[str]
) -> pd.DataFrame:
    """One table of a sweep: each task's result (a dict of scalars, or a list of them) as rows,
    led by the task's key columns, sorted by key (stable), index 0..n-1."""
    rows: list[dict[str, Any]] = []
    for t, res in zip(tasks, results, strict=True):
        if len(t.key) != len(key_names):
            raise ValueError(f"task {t.label}: key has {len(t.key)} parts, names {key_names}")
        items: Iterable[Mapping[str, Any]] = [res] if isinstance(res, Mapping) else res
        for r in items:
            rows.append({**dict(zip(key_names, t.key, strict=True)), **r})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(list(key_names), kind="stable").reset_index(drop=True)


def add_sweep_arguments(p: Any) -> None:
    """``--jobs`` and ``--scheduler`` on a command's parser."""
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run the independent tasks (markets, folds) in N local processes (default 1)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run them on a Dask cluster, e.g. tcp://HOST:8786 (pip install 'liqsignal[cluster]';"
        " docs/sweeps.md)",
    )


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` on 127.0.0.1 with worker processes that have
    :data:`WORKER_ENV` (one thread each); for tests, benchmarks and one-machine runs."""
    try:
        from distributed import LocalCluster
    except ImportError as e:
        raise ConfigError(_INSTALL_HINT) from e
    opts: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        # no dashboard; the scheduler's small HTTP server (health, metrics) on a free port
        # rather than 8787, which another cluster on the machine may hold
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        "env": dict(WORKER_ENV),
    }
    opts.update(kwargs)
    return LocalCluster(**opts)
