"""Where the cases of a per-case run execute: here, one after another, or on Dask.

- :func:`run_serial`: in this process, in order.
- :func:`run_on_dask`: as tasks of a Dask distributed cluster (``client.map`` over the
  jobs, collected with ``as_completed``): a :class:`~distributed.LocalCluster` of
  ``workers`` single-threaded worker processes started here, or an existing scheduler at
  ``scheduler`` (``dask scheduler`` / ``dask worker``, dask-jobqueue). Task ``resources``
  (e.g. ``{"GPU": 1}``) send cases only to workers that declare them. A worker that dies
  while it runs a case (killed, out of memory, node lost) is replaced and the scheduler runs
  the case again elsewhere; as each case folder is written atomically, the retry leaves no
  half-written result. A case that fails on bad input comes back as a ``failed`` outcome.

Dask is imported only here, and only when a cluster is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from deepgmm.cohort.case import CaseJob, CaseOutcome, run_case
from deepgmm.errors import InputError

SCHEDULER_TIMEOUT_S = 20
"""Seconds to wait for an existing scheduler to answer."""


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``"GPU=1"`` / ``"GPU=1,MEM=8e9"`` -> ``{"GPU": 1.0, ...}``; ``None`` stays ``None``.

    Raises:
        InputError: not ``NAME=NUMBER`` pairs (names the option ``resources``).
    """
    if text is None:
        return None
    found: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name.strip() or amount <= 0:
            raise InputError(f"resources expects NAME=AMOUNT pairs with a positive amount, "
                             f"e.g. GPU=1; got {text!r}", params=("resources",))
        found[name.strip()] = amount
    return found


def check_cluster_options(workers: int | None, scheduler: str | None,
                          resources: Mapping[str, float] | None, threads: int) -> None:
    """Refuse contradicting or out-of-range cluster options before any work is done."""
    if workers is not None and scheduler is not None:
        raise InputError("give workers (a local cluster) or scheduler (an existing one), "
                         "not both", params=("workers", "scheduler"))
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}", params=("workers",))
    if threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}", params=("threads",))
    if resources and workers is None and scheduler is None:
        raise InputError("resources apply to Dask workers: give workers or scheduler too",
                         params=("resources",))


def _bar(total: int, progress: bool) -> Any:
    return tqdm(total=total, desc="cases", unit="case", disable=not progress)


def run_serial(jobs: Sequence[CaseJob], *, progress: bool = True,
               task: Callable[[CaseJob], CaseOutcome] = run_case) -> list[CaseOutcome]:
    """Run the jobs here, one after another; outcomes in job order."""
    outcomes = []
    with _bar(len(jobs), progress) as bar:
        for job in jobs:
            outcomes.append(task(job))
            bar.update(1)
    return outcomes


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None,
                resources: Mapping[str, float] | None = None) -> Iterator[Any]:
    """A Dask client of a new local cluster (``workers`` single-threaded processes, each
    declaring ``resources``) or of the scheduler at ``scheduler``; closed on exit.

    Raises:
        InputError: no scheduler answers at ``scheduler``.
    """
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as err:
                raise InputError(f"no Dask scheduler answered at {scheduler!r} within "
                                 f"{SCHEDULER_TIMEOUT_S} s ({err}); start one with `dask "
                                 f"scheduler` and workers with `dask worker {scheduler}`",
                                 params=("scheduler",)) from None
            stack.enter_context(client)
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                resources=dict(resources) if resources else None,
                dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        yield client


def run_on_dask(jobs: Sequence[CaseJob], client: Any, *,
                resources: Mapping[str, float] | None = None, progress: bool = True,
                task: Callable[[CaseJob], CaseOutcome] = run_case) -> list[CaseOutcome]:
    """Run the jobs as tasks of ``client``'s cluster; outcomes in job order.

    Each case is one task (key ``deepgmm-case-<id>-<run>``) needing ``resources``; a bar
    counts finished cases. A case whose workers kept dying (Dask's ``KilledWorker`` after
    its allowed retries) is a ``failed`` outcome; any other error of a task raises here.
    """
    from dask.distributed import as_completed
    from distributed.scheduler import KilledWorker

    run = uuid.uuid4().hex[:8]
    keys = [f"deepgmm-case-{job.case_id}-{run}" for job in jobs]
    futures = client.map(task, list(jobs), key=keys, pure=False,
                         resources=dict(resources) if resources else None)
    by_key = {f.key: job for f, job in zip(futures, jobs, strict=True)}
    outcomes: dict[str, CaseOutcome] = {}
    with _bar(len(jobs), progress) as bar:
        for future in as_completed(futures):
            job = by_key[future.key]
            try:
                outcomes[job.case_id] = future.result()
            except KilledWorker as err:
                outcomes[job.case_id] = CaseOutcome(
                    job.case_id, "failed", exit_code=3,
                    error=f"the workers running it died repeatedly ({err})")
            bar.update(1)
    return [outcomes[job.case_id] for job in jobs]


def run_jobs(jobs: Sequence[CaseJob], *, workers: int | None = None,
             scheduler: str | None = None, resources: Mapping[str, float] | None = None,
             progress: bool = True) -> list[CaseOutcome]:
    """Run the jobs serially (no ``workers`` / ``scheduler``) or on Dask."""
    if not jobs:
        return []
    if workers is None and scheduler is None:
        return run_serial(jobs, progress=progress)
    with dask_client(workers=workers, scheduler=scheduler, resources=resources) as client:
        return run_on_dask(jobs, client, resources=resources, progress=progress)
