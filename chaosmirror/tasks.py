"""One engine copy (a task) and how it gets done: the engine's copy, retried on transient failures,
read from a staged folder when every blob is already in the target (`staging`), and finished by
chaosmirror's own client when the engine keeps failing. `mirror` schedules the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaosmirror import direct, foreign
from chaosmirror.engines import Engine
from chaosmirror.errors import ChaosmirrorError, EngineError, RegistryError
from chaosmirror.manifest import Manifest
from chaosmirror.plan import Action, Part
from chaosmirror.ref import DirRef, ImageRef, LayoutRef, Location
from chaosmirror.registry import Registries
from chaosmirror.staging import Staging


@dataclass(frozen=True)
class Task:
    """One engine copy: `part` (a manifest and its blobs) from `src` to `dst`."""

    action: Action
    part: Part
    src: ImageRef | LayoutRef
    dst: ImageRef


def tasks_for(action: Action, *, split: bool) -> list[Task]:
    """The engine copies that make up `action`, and whether an index must be put after them.

    An unfiltered index is one engine copy (`--all`) unless `split`, when its platforms go as
    separate copies that run in parallel, which pays off when each copy waits on round trips to a
    far registry. A filtered index is always split: only the chosen platforms go."""
    item, selection = action.item, action.selection
    assert selection is not None
    if selection.index is None:
        return [Task(action, action.parts[0], item.pull.with_digest(action.parts[0].digest), item.dst)]
    if not split and selection.digest == action.source_digest:
        layers = tuple(sorted({d: n for part in action.parts for d, n in part.layers}.items()))
        whole = Part(action.source_digest, layers, action.size)
        return [Task(action, whole, item.pull.with_digest(action.source_digest), item.dst)]
    return [
        Task(action, part, item.pull.with_digest(part.digest), item.dst.with_digest(part.digest))
        for part in action.parts
    ]


def copy_with_retries(engine: Engine, src: Location, dst: Location, registries: Registries) -> str:
    """One engine copy, under the hosts' limiters; a transient failure (a 5xx, a 429, a dropped
    connection, an outage) is retried with the transport's backoff. skopeo then skips the blobs
    that already landed, so a retry resumes where the last attempt broke off."""
    run, policy = registries.run, registries.policy
    hosts = [where.registry for where in (src, dst) if isinstance(where, ImageRef)]
    limiters = [registries.limiter(host) for host in dict.fromkeys(hosts)]
    attempts = policy.retries + 1
    for attempt in range(attempts):
        run.check()
        taken = []
        throttled = False
        try:
            for limiter in limiters:
                limiter.acquire(run)
                taken.append(limiter)
            return engine.copy(src, dst)
        except EngineError as exc:
            throttled = exc.kind == "rate-limited"
            if not exc.transient or attempt == attempts - 1:
                if exc.transient and attempts > 1:
                    raise EngineError(f"{exc} (gave up after {attempts} attempts)", kind=exc.kind) from None
                raise
            wait = policy.delay(attempt, exc.retry_after)
        finally:
            for limiter in reversed(taken):
                limiter.release(throttled=throttled)
        if run.wait(wait):
            raise run.interrupted()
    raise AssertionError("unreachable")  # pragma: no cover


def copy_or_finish(engine: Engine, task: Task, registries: Registries) -> tuple[str, str]:
    """The engine's copy, retried; if an exact engine still fails on a transient error between two
    registries, chaosmirror's client finishes the copy (every digest exact). Returns the digest held
    and a note when the client finished it."""
    try:
        return copy_with_retries(engine, task.src, task.dst, registries), ""
    except EngineError as exc:
        if not (exc.transient and engine.exact and isinstance(task.src, ImageRef)):
            raise
        failure = str(exc)
    try:
        held = direct.copy_part(task.action, task.part, task.src, task.dst, registries)
    except RegistryError as exc:
        if not exc.transient:  # the client found out why (a full storage, a refusal): say that first
            raise EngineError(f"{exc} ({engine.name} had failed too: {failure})", kind=exc.kind) from None
        raise EngineError(f"{failure}; chaosmirror's own client could not finish it either: {exc}",
                          kind=exc.kind) from None  # fmt: skip
    return held, f"{engine.name} kept failing ({failure}); chaosmirror's client finished the copy"


def task_manifests(task: Task) -> list[Manifest]:
    """The manifests one engine copy writes: its part, and every child when the part is an index."""
    written = {m.digest: m for m in task.action.manifests}
    top = written.get(task.part.digest)
    if top is None:
        return []
    return [written[d.digest] for d in top.children() if d.digest in written] + [top] if top.is_index else [top]


def copy_task(engine: Engine, task: Task, registries: Registries, *, staging: Staging | None,
              in_target: bool) -> tuple[str, str]:  # fmt: skip
    """One engine copy of `task`, returning the digest held and a note. When every blob of it is in
    the target already (`in_target`), skopeo reads the manifests from a staged folder, not from the
    source registry; if that fails, the copy runs again from the registry."""
    refused = engine.refuses(task_manifests(task))
    if refused:
        raise EngineError(refused)
    if engine.exact:
        foreign.put_first(registries.for_ref(task.dst, "dest"), task.dst, task_manifests(task))
    staged: DirRef | None = None
    written = {m.digest: m for m in task.action.manifests}
    if staging is not None and in_target and isinstance(task.src, ImageRef) and task.part.digest in written:
        try:
            staged = staging.stage(written[task.part.digest], written, task.src)
        except (ChaosmirrorError, OSError):
            staged = None
    if staging is None or staged is None:
        return copy_or_finish(engine, task, registries)
    try:
        return copy_with_retries(engine, staged, task.dst, registries), ""
    except EngineError as exc:
        held, note = copy_or_finish(engine, task, registries)
        return held, note or f"{engine.name} could not copy from the staged manifests ({exc}); it read the source"
    finally:
        staging.drop(staged)
