"""Running many renders: in this process, or spread over a Ray cluster (``clp2p[cluster]``).

A :class:`Worker` holds one loaded model and its session renderer (so a record one task
leaves serves the next) and runs tasks: a module-level function ``work(worker, payload)``
that returns a dict. A pool hands tasks to workers and each outcome, as it arrives, to the
caller. :class:`LocalPool` has one worker in this process; :class:`RayPool` one Ray actor per
GPU or per group of CPU threads, each loading the model once. Ray schedules the actors; an
actor lost mid-task is restarted and the task retried, and a task that keeps failing its
worker is given up with its error: the other tasks go on either way.

A task's own failure (bad input, an error in the engine) is its outcome's ``error``, never an
exception out of the pool."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clp2p.errors import Clp2pError, RenderCancelled

if TYPE_CHECKING:
    from clp2p.workflows.service import ModelSpec

RAY_EXTRA = "pip install -e '.[cluster]' (or pip install 'ray[default]')"
MAX_ATTEMPTS = 3  # a task whose worker dies this many times is given up
KEPT_IMAGES = 64  # source images a worker keeps for the next tasks


@dataclass(frozen=True)
class Task:
    """One unit of work: ``key`` names it in outcomes, ``payload`` is the work's argument."""

    key: str
    payload: object


Work = Callable[["Worker", object], dict]
Done = Callable[[Task, dict], None]


def failure(exc: BaseException) -> str:
    """One line for a task's failure: a user error's own message, else the fault's type."""
    if isinstance(exc, Clp2pError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class Worker:
    """One model for many tasks, loaded on first use (or given: the studio's own engine)."""

    def __init__(self, spec: ModelSpec, threads: int | None = None, engine=None, renderer=None):
        self.spec, self.threads = spec, threads
        self._engine, self._renderer = engine, renderer
        self.images: OrderedDict[str, np.ndarray] = OrderedDict()  # chain key -> image
        self.cancel: Callable[[], bool] | None = None  # a task's renders stop when it says so
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def engine(self):
        if self._engine is None:
            from clp2p.engine.engine import Engine
            from clp2p.workflows.adapters import adapters_from

            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            adapters = adapters_from(list(self.spec.loras), list(self.spec.embeddings))
            self._engine = Engine.load(
                self.spec.model, self.spec.device, self.spec.dtype, adapters=adapters
            )
        return self._engine

    @property
    def renderer(self):
        if self._renderer is None:
            from clp2p.workflows.session_render import SessionRenderer

            self._renderer = SessionRenderer(self.engine, self.spec.cache_mib * 2**20)
        return self._renderer

    def keep_image(self, key: str, image: np.ndarray) -> None:
        self.images[key] = image
        self.images.move_to_end(key)
        while len(self.images) > KEPT_IMAGES:
            self.images.popitem(last=False)

    def run(self, work: Work, payload: object) -> dict:
        """``work(self, payload)`` with its time and this worker's name; its failure as
        ``{"error": message}``. A cancel passes through."""
        start = time.perf_counter()
        try:
            out = work(self, payload)
        except RenderCancelled:
            raise
        except Exception as exc:  # one task's fault: recorded, the others go on
            out = {"error": failure(exc)}
        out.setdefault("seconds", round(time.perf_counter() - start, 3))
        out["worker"] = self.name
        return out


class LocalPool:
    """One worker in this process, tasks in order."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.size = 1
        self.where = "this process"

    def __enter__(self) -> LocalPool:
        self.worker.engine  # noqa: B018  load the model before the first task's clock starts
        return self

    def __exit__(self, *exc) -> None:
        pass

    def wait(self) -> None:
        """Return when the worker is ready to render (it is, once entered)."""

    def run(
        self,
        tasks: Iterable[Task],
        work: Work,
        on_done: Done,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.worker.cancel = cancel
        try:
            for task in tasks:
                if cancel is not None and cancel():
                    raise RenderCancelled("cancelled")
                on_done(task, self.worker.run(work, task.payload))
        finally:
            self.worker.cancel = None


class _Actor:
    """The Ray actor around a :class:`Worker` (made remote when a :class:`RayPool` starts).
    ``spec`` is a ModelSpec or its fields (a pool started before this process loaded torch)."""

    def __init__(self, spec, threads: int | None) -> None:
        if isinstance(spec, dict):
            from clp2p.workflows.service import ModelSpec

            spec = ModelSpec(**spec)
        self.worker = Worker(spec, threads)

    def ready(self) -> str:
        self.worker.engine  # noqa: B018  load the model now, not in the first task
        return self.worker.name

    def run(self, work: Work, payload: object) -> dict:
        return self.worker.run(work, payload)


def ray_module():
    """Ray, imported without usage reports; a one-line error when it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise Clp2pError(f"running on Ray needs Ray installed: {RAY_EXTRA}") from None
    return ray


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one line and within ``timeout`` seconds, a Ray address that is not
    ``HOST:PORT`` (or ``ray://HOST:PORT``) of something listening (Ray itself would retry
    for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise Clp2pError(
            f"Ray address '{address[:80]}': give HOST:PORT as 'ray start --head' prints it, "
            "or 'auto' to start Ray on this machine"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise Clp2pError(
            f"cannot reach the Ray cluster at '{address[:80]}' ({reason}): start it with "
            "'ray start --head', or give 'auto' to start Ray on this machine"
        ) from None


class RayPool:
    """Actors on a Ray cluster: ``address`` ``auto`` starts a local Ray instance on this
    machine, any other address joins that cluster. ``workers`` actors (default: as many as
    the cluster has GPUs, or CPUs / ``threads``), each with ``threads`` CPU threads, and one
    GPU each when ``gpus``."""

    def __init__(
        self,
        spec: ModelSpec,
        address: str = "auto",
        workers: int | None = None,
        threads: int = 1,
        gpus: bool = False,
    ) -> None:
        if workers is not None and workers < 1:
            raise Clp2pError(f"workers {workers}: give at least 1")
        if threads < 1:
            raise Clp2pError(f"threads {threads}: give at least 1")
        self.spec, self.address, self.threads, self.gpus = spec, address, threads, gpus
        self.requested = workers
        self.actors: list = []
        self.size = 0
        self.where = ""
        self._started = False
        self._loading: dict = {}  # readiness ref -> a worker still loading the model
        self._ready: list = []  # workers found loaded by wait(), not yet handed a task
        self.ray = None

    def start(self) -> RayPool:
        """Start Ray (or join the cluster) and the workers, and return at once: the workers
        load the model meanwhile (this process may load its own libraries alongside), and
        :meth:`run` hands each its first task when it is ready. Torch is not imported here."""
        if self.ray is not None:
            return self
        if self.address != "auto":
            reachable(self.address)
        ray = self.ray = ray_module()
        options = {"include_dashboard": False, "log_to_driver": False}
        try:
            if self.address == "auto":
                cpus = max(os.cpu_count() or 1, (self.requested or 1) * self.threads)
                ray.init(address="local", num_cpus=cpus, **options)
                self._started = True
            else:
                ray.init(address=self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise Clp2pError(
                f"cannot join the Ray cluster at '{self.address}' ({str(exc).splitlines()[0]}): "
                "give the address 'ray start --head' printed (a cluster with token "
                "authentication also needs RAY_AUTH_MODE=token and its token here), or 'auto' "
                "for this machine"
            ) from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.gpus else 0
        count = self.requested or gpus or max(1, int(resources.get("CPU", 1)) // self.threads)
        self._remote = ray.remote(
            num_cpus=self.threads,
            num_gpus=1 if gpus else 0,
            max_restarts=MAX_ATTEMPTS,
            max_task_retries=MAX_ATTEMPTS,
        )(_Actor)
        self.actors = [self._remote.remote(self.spec, self.threads) for _ in range(count)]
        self._loading = {a.ready.remote(): a for a in self.actors}
        self.size = count
        self.where = f"Ray at {self.address}: {count} workers"
        return self

    def __enter__(self) -> RayPool:
        return self.start()

    def wait(self) -> None:
        """Return when every worker has loaded the model (a benchmark's clock starts here)."""
        ray = self.ray
        while self._loading:
            ray.wait(list(self._loading), num_returns=len(self._loading))
            self._ready.extend(self._loaded(ray))

    def __exit__(self, *exc) -> None:
        ray = self.ray
        if ray is None:
            return
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()
        self.ray = None

    def run(
        self,
        tasks: Iterable[Task],
        work: Work,
        on_done: Done,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        """One task in flight per actor; the next goes to whichever actor finishes first."""
        queue = list(tasks)[::-1]
        running: dict = {}  # object ref -> (task, actor)
        idle, self._ready = self._ready, []
        try:
            self._loop(queue, idle, running, work, on_done, cancel)
        finally:  # loaded workers wait for the next run (one still busy finishes first)
            self._ready = idle + [actor for _, actor in running.values()]

    def _loop(self, queue: list, idle: list, running: dict, work: Work, on_done: Done, cancel):
        ray = self.ray
        attempts: dict[str, int] = {}
        while queue or running:
            if cancel is not None and cancel():
                raise RenderCancelled("cancelled")
            idle += self._loaded(ray)
            if not (running or idle or self._loading):
                raise Clp2pError("no Ray worker is left to render: see the cluster's logs")
            while queue and idle:
                task, actor = queue.pop(), idle.pop()
                running[actor.run.remote(work, task.payload)] = (task, actor)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in ready:
                task, actor = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                    idle.append(actor)
                except ray.exceptions.RayError as exc:  # the worker died under it
                    idle.append(self._replace(actor))
                    attempts[task.key] = attempts.get(task.key, 0) + 1
                    if attempts[task.key] < MAX_ATTEMPTS:
                        queue.append(task)
                        continue
                    outcome = {"error": f"its worker was lost {MAX_ATTEMPTS} times: {failure(exc)}"}
                on_done(task, outcome)

    def _loaded(self, ray) -> list:
        """The workers that finished loading the model since the last call; a worker that
        could not load it stops the run."""
        if not self._loading:
            return []
        done, _ = ray.wait(list(self._loading), num_returns=len(self._loading), timeout=0)
        loaded = []
        for ref in done:
            actor = self._loading.pop(ref)
            try:
                ray.get(ref)
            except Exception as exc:
                raise Clp2pError(f"a Ray worker could not load the model: {failure(exc)}") from None
            loaded.append(actor)
        return loaded

    def _replace(self, actor):
        """A new actor in place of one that died (Ray restarts an actor a few times; one that
        keeps dying is replaced so that the remaining tasks still have workers)."""
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(actor)
        fresh = self._remote.remote(self.spec, self.threads)
        self.actors = [fresh if a is actor else a for a in self.actors]
        return fresh


def pool_of(runner):
    """``runner`` when it is a pool; for an engine, a pool of one worker in this process that
    uses it."""
    if hasattr(runner, "run") and hasattr(runner, "where"):
        return runner
    from clp2p.workflows.service import ModelSpec

    return LocalPool(Worker(ModelSpec(runner.name), engine=runner))


def run_ordered(
    runner, work: Work, payloads: list, what: str, progress: Callable[[int, int], None]
) -> list[dict]:
    """``work(worker, payload)`` of every payload on ``runner``'s workers (see
    :func:`pool_of`), the outcomes in the payloads' order; the first failure stops the run
    with its message, prefixed by ``what``."""
    out: dict[int, dict] = {}

    def done(task: Task, outcome: dict) -> None:
        if outcome.get("error"):
            raise Clp2pError(f"{what}: {outcome['error']}")
        out[int(task.key)] = outcome
        progress(len(out), len(payloads))

    tasks = [Task(str(i), p) for i, p in enumerate(payloads)]
    pool_of(runner).run(tasks, work, done)
    return [out[i] for i in range(len(payloads))]
