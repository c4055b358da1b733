"""Carry out a plan with an engine: manifests in parallel, each blob uploaded once.

The unit of work is a task: one manifest copied by the engine (a single-platform image, or one
platform of an index; the index itself is put once all its platforms are in). Every blob the
engine would take from the target as it is (`Engine.reuses`) is seeded first by `layers.Seeder`,
and a task waits only until the blobs it holds are in the target, so nothing is uploaded twice and
nothing waits for unrelated work. Tasks go largest first, which keeps every worker busy to the end.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from chaosmirror import signatures
from chaosmirror.cache import ManifestCache
from chaosmirror.engines import Engine
from chaosmirror.engines.repush import docker_left_out, same_config
from chaosmirror.errors import ChaosmirrorError, EngineError, Interrupted, RegistryError
from chaosmirror.layers import Seeder, SharedLayer, shared_layers
from chaosmirror.lifecycle import Run
from chaosmirror.manifest import Platform, platform_children
from chaosmirror.plan import Action, Item, Observed, Plan, build_plan, collect_items
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registries
from chaosmirror.release import Release
from chaosmirror.report import Entry, Report, Status
from chaosmirror.session import NoCopies, Session
from chaosmirror.settings import Settings
from chaosmirror.staging import Staging
from chaosmirror.survey import FAR_SECONDS, check_target, survey
from chaosmirror.tasks import Task, copy_task, copy_with_retries, tasks_for

__all__ = [
    "Event",
    "NoCopies",
    "Session",
    "Task",
    "copy_with_retries",
    "entry_for",
    "mirror_release",
    "run",
    "tasks_for",
]


class _Gate:
    """Hands out tasks, largest first, never two at once that would upload the same blob.

    A task may start once none of its blobs is claimed (being seeded, or being uploaded by another
    task). Each pending task counts its claimed blobs, and the tasks whose count falls to zero wait in
    a heap by size, so handing out a task or releasing a blob costs only the tasks that hold that
    blob, not a scan of every pending task (which, with every worker woken at each of a big run's
    thousands of seeded blobs, grew with the square of the run)."""

    def __init__(self, tasks: list[Task], seeding: set[str]) -> None:
        self.tasks = sorted(tasks, key=lambda t: -t.part.size)  # `ready` holds positions here: lowest (largest) first
        self.blobs = [t.part.blobs for t in self.tasks]
        self.holders: dict[str, list[int]] = {}
        for n, blobs in enumerate(self.blobs):
            for blob in blobs:
                self.holders.setdefault(blob, []).append(n)
        self.claimed: set[str] = set(seeding)
        self.done: set[str] = set()
        self.blocked = [sum(1 for b in blobs if b in self.claimed) for blobs in self.blobs]
        self.taken = [False] * len(self.tasks)
        self.ready = [n for n, count in enumerate(self.blocked) if count == 0]  # sorted, so a heap
        self.left = len(self.tasks)
        self.cond = threading.Condition()

    def take(self, run: Run | None = None) -> tuple[Task, set[str]] | None:
        """The next task and the blobs it now owns; None when none is left or the run stopped."""
        with self.cond:
            while self.left and not (run and run.stopped):
                while self.ready:
                    n = heapq.heappop(self.ready)
                    if self.taken[n] or self.blocked[n]:
                        continue  # taken already, or claimed again since it was ready: it comes back
                    self.taken[n] = True
                    self.left -= 1
                    mine = set(self.blobs[n] - self.done)
                    self._claim(mine)
                    if not self.left:
                        self.cond.notify_all()  # the other workers stop waiting
                    return self.tasks[n], mine
                self.cond.wait(0.25)
            return None

    def release(self, blobs: set[str], *, ok: bool) -> None:
        with self.cond:
            freed = blobs & self.claimed
            self.claimed -= freed
            if ok:
                self.done |= blobs
            woke = False
            for blob in freed:
                for n in self.holders.get(blob, ()):
                    if not self.taken[n]:
                        self.blocked[n] -= 1
                        if not self.blocked[n]:
                            heapq.heappush(self.ready, n)
                            woke = True
            if woke:
                self.cond.notify_all()

    def _claim(self, blobs: set[str]) -> None:
        for blob in blobs - self.claimed:
            self.claimed.add(blob)
            for n in self.holders.get(blob, ()):
                if not self.taken[n]:
                    self.blocked[n] += 1


@dataclass(frozen=True)
class Event:
    kind: str  # "planned" (size: bytes to move, count: images to copy), "start" or "done"
    action: Action | None  # None for work that is not a planned copy (docker-archive imports)
    entry: Entry | None = None
    size: int = 0
    count: int = 0


def entry_for(action: Action, status: Status, *, seconds: float = 0.0, error: str = "") -> Entry:
    item = action.item
    platforms = action.selection.platforms if action.selection else ()
    return Entry(
        str(item.src),
        str(item.dst),
        status,
        action.digest,
        item.uses,
        str(item.pull),
        platforms,
        action.size,
        seconds,
        action.reason if status not in ("failed", "interrupted") else "",
        error,
        action.source_digest,
        left_out=action.selection.left_out if action.selection else (),
    )


@dataclass
class _Progress:
    """How far one action's tasks have got."""

    remaining: int
    puts_index: bool
    started: float = 0.0
    errors: list[str] = field(default_factory=list)
    held: str = ""
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def finish(action: Action, progress: _Progress, registries: Registries, *, exact: bool = True) -> Entry:
    """Once every part is in: put the index if there is one, then check with a HEAD of our own
    that the target holds the planned digest (for an engine that cannot keep digests, `exact`
    false, the digest the engine pushed); only then is the image `copied`."""

    def seconds() -> float:
        return time.monotonic() - progress.started

    if progress.interrupted:
        return entry_for(action, "interrupted", seconds=seconds(), error=registries.run.reason)
    if progress.errors:
        return entry_for(action, "failed", seconds=seconds(), error="; ".join(dict.fromkeys(progress.errors)))
    assert action.selection is not None
    dest = registries.for_ref(action.item.dst, "dest")
    try:
        if exact and progress.puts_index and action.selection.index is not None:  # never an index of parts not put
            dest.put_manifest(action.item.dst, action.selection.index)
        expected = action.digest if exact else progress.held
        held = dest.digest(action.item.dst)
        if held != expected:
            planned = "the planned" if exact else "the pushed"
            raise ChaosmirrorError(f"after the copy the target holds {held or 'nothing'} at {action.item.dst}, "
                                   f"not {planned} {expected or 'digest'}")  # fmt: skip
    except Interrupted:
        return entry_for(action, "interrupted", seconds=seconds(), error=registries.run.reason)
    except ChaosmirrorError as exc:
        return entry_for(action, "failed", seconds=seconds(), error=str(exc))
    entry = replace(entry_for(action, "copied", seconds=seconds()), note="; ".join(dict.fromkeys(progress.notes)))
    return entry if exact else replace(entry, digest=progress.held)


def _quiet(callback: Callable[[Event], None]) -> Callable[[Event], None]:
    """A progress callback whose failures cannot end the run (the report still tells everything)."""

    def call(event: Event) -> None:
        with contextlib.suppress(Exception):  # progress is a display; the report is the record
            callback(event)

    return call


def _reused(task: Task, engine: Engine) -> tuple[tuple[str, int], ...]:
    """The blobs of `task` that chaosmirror's client uploads before the engine copies it: those the
    engine finds in the target and uses as they are (skopeo, every one; a Docker daemon, the config
    and gzip layers, which spares it compressing each layer again)."""
    kinds = {b.digest: b for m in task.action.manifests if not m.is_index for b in m.stored_blobs()}
    return tuple((d, n) for d, n in task.part.layers if d in kinds and engine.reuses(kinds[d]))


def run(
    plan: Plan,
    engine: Engine,
    registries: Registries,
    *,
    jobs: int = 16,
    split: bool = True,
    staging: Staging | None = None,
    on_event: Callable[[Event], None] = lambda e: None,
    on_phase: Callable[[str], None] = lambda m: None,
    on_bytes: Callable[[int], None] | None = None,
    carrier: signatures.Carrier | None = None,
) -> list[Entry]:
    """Run every copy of `plan`; a failed image is an entry, never an exception. Entries in plan
    order. When the run stops (registries.run), no new copy starts and what did not finish is
    `interrupted`. An image that is the same as another's (`twin`) takes that one's outcome. With
    `staging`, a copy whose blobs are all in the target reads its manifests from a local folder.
    With `carrier`, what is attached to each image travels as soon as the image is in (or at once,
    for an image already there), beside the copies still running."""
    stop = registries.run
    emit = _quiet(on_event)
    results: dict[int, Entry] = {}
    attached: dict[int, Future[Entry]] = {}
    for i, action in enumerate(plan.actions):
        if action.kind != "copy" and action.twin is None:
            status: Status = "skipped" if action.kind == "skip" else "failed"
            results[i] = entry_for(action, status, error=action.reason if status == "failed" else "")
            emit(Event("done", action, results[i]))
            if carrier is not None:
                attached[i] = carrier.submit(action, results[i])
    by_action = {id(a): tasks_for(a, split=split) for a in plan.actions if a.kind == "copy"}
    tasks = [t for ts in by_action.values() for t in ts]
    progress = {key: _Progress(len(ts), ts[0].dst != ts[0].action.item.dst) for key, ts in by_action.items()}
    position = {id(a): i for i, a in enumerate(plan.actions)}
    layers = shared_layers(((t.src, t.action.item.dst, _reused(t, engine)) for t in tasks), min_repos=1)
    gate = _Gate(tasks, {layer.digest for layer in layers})
    lock = threading.Lock()
    if layers:
        on_phase(f"uploading {len(layers)} blobs ({sum(x.size for x in layers) / 1e6:.1f} MB), each once")
    copies = [a for a in plan.actions if a.kind == "copy"]
    unique = {d: n for a in copies for part in a.parts for d, n in part.layers}  # each blob moves once
    emit(Event("planned", None, size=sum(unique.values()), count=len(copies)))
    configs = {m.config().digest for a in copies for m in a.manifests if not m.is_index}

    def local(layer: SharedLayer) -> bytes | None:
        """Configs are read once, into the cache: the seeder uploads them and the staged copies use them."""
        if staging is None or layer.digest not in configs or not isinstance(layer.source, ImageRef):
            return None
        return staging.config(layer.source, layer.digest, layer.size)

    seeder = Seeder(registries, jobs=jobs, on_done=lambda digest, ok: gate.release({digest}, ok=ok), local=local,
                    on_bytes=on_bytes)  # fmt: skip

    def worker() -> None:
        while (taken := gate.take(stop)) is not None:
            task, mine = taken
            state = progress[id(task.action)]
            with lock:
                first = not state.started
                state.started = state.started or time.monotonic()
            if first:
                emit(Event("start", task.action))
            held, error, cut = "", "", False
            try:
                held, note = copy_task(engine, task, registries, staging=staging, in_target=not mine)
                if note:
                    with lock:
                        state.notes.append(note)
            except Interrupted:
                cut = True
            except ChaosmirrorError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one image's bug must not stop the others
                error = f"internal error: {type(exc).__name__}: {exc}"
            gate.release(mine, ok=not (error or cut))
            with lock:
                state.remaining -= 1
                state.held = held or state.held
                state.interrupted = state.interrupted or cut
                if error:
                    state.errors.append(error)
                last = state.remaining == 0
            if last:
                try:
                    entry = finish(task.action, state, registries, exact=engine.exact)
                except Exception as exc:  # noqa: BLE001 - as above
                    entry = entry_for(task.action, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
                with lock:
                    results[position[id(task.action)]] = entry
                emit(Event("done", task.action, entry))
                if carrier is not None:
                    attached[position[id(task.action)]] = carrier.submit(task.action, entry)

    workers = max(1, min(jobs, len(tasks)))
    try:
        seeder.start(layers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
            for future in [pool.submit(worker) for _ in range(workers)]:
                future.result()
    finally:
        seeder.close()
    for i, action in enumerate(plan.actions):  # not started, or cut short, because the run stopped
        if i not in results and action.twin is None:
            results[i] = entry_for(action, "interrupted", error=stop.reason)
            emit(Event("done", action, results[i]))
    index = {action.item: results[i] for i, action in enumerate(plan.actions) if i in results}
    for i, action in enumerate(plan.actions):
        if action.twin is not None:
            results[i] = twin_entry(action, index.get(action.twin))
            emit(Event("done", action, results[i]))
    for i, carried in attached.items():
        results[i] = carried.result()
    return [results[i] for i in range(len(plan.actions))]


def twin_entry(action: Action, twin: Entry | None) -> Entry:
    """The outcome of an image that lands where another one of the run did (same image)."""
    if twin is None or twin.status in ("copied", "skipped"):
        digest = twin.digest if twin else action.digest
        return replace(entry_for(action, "skipped"), digest=digest)
    status: Status = "interrupted" if twin.status == "interrupted" else "failed"
    return entry_for(action, status, error=f"not copied: it is the same image as {twin.source}, which {twin.status}")


def mirror_release(
    release: Release,
    settings: Settings,
    *,
    dry_run: bool = False,
    run: Run | None = None,
    report: Report | None = None,
    on_event: Callable[[Event], None] = lambda e: None,
    on_phase: Callable[[str], None] = lambda m: None,
    on_bytes: Callable[[int], None] | None = None,
) -> Report:
    """Survey, plan and (unless `dry_run`) copy a release's images to the target; never raises for
    a failed image, and fills `report` as it goes (so a caller can write it whatever happens). A
    failure that stops the whole run (target unreachable, credentials refused) is the report's
    `error`, with every image marked failed; a stop (`run`) leaves what did not finish
    `interrupted`. Two sources colliding at the target raise PlanConflict, with the report's error set."""
    assert settings.target is not None
    report = label(report or Report("plan" if dry_run else "mirror", release.name, str(settings.target)), release,
                   settings)  # fmt: skip
    items = collect_items(
        release.images(settings.groups, optional=settings.optional), settings.target, settings.source_mirrors
    )
    run = run or Run.current() or Run()
    try:
        with Session(settings, report, run=run, on_bytes=on_bytes, copies=not dry_run, on_phase=on_phase) as (
            registries,
            engine,
        ):
            _mirror(items, report, settings=settings, registries=registries, engine=engine, dry_run=dry_run,
                    on_event=on_event, on_phase=on_phase, on_bytes=on_bytes)  # fmt: skip
    except Interrupted:
        done = {e.source for e in report.entries}
        report.entries += [Entry(str(i.src), str(i.dst), "interrupted", uses=i.uses, pulled_from=str(i.pull),
                                 error=run.reason) for i in items if str(i.src) not in done]  # fmt: skip
    except (RegistryError, EngineError) as exc:
        report.error = str(exc)
        report.entries = [Entry(str(i.src), str(i.dst), "failed", uses=i.uses, pulled_from=str(i.pull), error=str(exc))
                          for i in items]  # fmt: skip
    except ChaosmirrorError as exc:
        report.error = str(exc)
        raise
    if run.stopped:
        report.interrupted = run.reason
        report.signal = run.signal or 0
    return report


def label(report: Report, release: Release, settings: Settings) -> Report:
    """Name on `report` the releases of the run (several, for a `combine`d release) and which of them
    need each image."""
    report.releases = release.names
    needed = release.needed_by(settings.groups, optional=settings.optional)
    report.needed_by = {str(ref): names for ref, names in needed.items()}
    return report


def _mirror(items: list[Item], report: Report, *, settings: Settings, registries: Registries, engine: Engine,
            dry_run: bool, on_event: Callable[[Event], None], on_phase: Callable[[str], None],
            on_bytes: Callable[[int], None] | None = None) -> None:  # fmt: skip
    assert settings.target is not None
    wanted = platforms_for(engine, settings)
    on_phase(f"checking {len(items)} images in the source and in {settings.target.host}")
    # Far targets (slow round trips) gain from copying an index's platforms in parallel;
    # near ones are CPU-bound, and one process per image costs less.
    far = check_target(registries, settings.target.host) >= FAR_SECONDS
    cache = ManifestCache.from_env(settings.env)

    def note(message: str) -> None:
        report.notes.append(message)
        on_phase(message)

    jobs = settings.workers(far=far)
    # Signatures travel beside the copies (a skopeo engine keeps digests); through the Docker
    # engine, which pushes new digests, they are only looked up, once the copies are done.
    carrier = signatures.Carrier(registries, cache, copy=True, jobs=min(jobs, 8)) if (
        settings.signatures and engine.exact and not dry_run) else None  # fmt: skip
    with carrier or contextlib.nullcontext():
        if carrier is not None:
            carrier.prefetch([i.pull for i in items if isinstance(i.pull, ImageRef)])
        observed = survey(items, registries, wanted, jobs=jobs, configs=not engine.exact, cache=cache,
                          alone=not engine.exact, note=note)  # fmt: skip
        if not engine.exact:
            warn_multi_arch(observed, wanted, on_phase)
            if settings.ca_file or settings.insecure:
                on_phase("note: the Docker daemon does not take --ca-cert or --insecure-registry from "
                         "chaosmirror; it trusts /etc/docker/certs.d/HOST/ca.crt and its own insecure-registries "
                         "setting")  # fmt: skip
        plan = build_plan(items, observed, wanted, exact=engine.exact, recognise=None if engine.exact else same_config)
        if dry_run:
            report.entries = [planned_entry(a) for a in plan.actions]
            return
        on_phase(f"copying {plan.count('copy')} images, {plan.count('skip')} already there")
        if carrier is not None:
            on_phase("with each image, the signatures, attestations, SBOMs and referrers stored next to it")
        staging = Staging(_config_reader(registries, cache)) if engine.stages else None
        try:
            entries = run(plan, engine, registries, jobs=jobs, split=far, staging=staging,
                          on_event=on_event, on_phase=on_phase, on_bytes=on_bytes, carrier=carrier)  # fmt: skip
        finally:
            if staging is not None:
                staging.close()
    if not engine.exact:
        entries = [replace(e, left_out=docker_left_out(observed[a.item], a)) for a, e in zip(plan.actions, entries,
                   strict=True)]  # fmt: skip
        entries = signatures.carry(list(plan.actions), entries, registries, cache, copy=False, jobs=jobs)
    report.entries = entries
    if cache.hits or cache.reads:
        report.notes.append(f"manifests: {cache.reads} read from the registries, {cache.hits} from the local cache "
                            f"({cache.folder})")  # fmt: skip


def _config_reader(registries: Registries, cache: ManifestCache) -> Callable[[ImageRef, str, int], bytes]:
    """An image config's bytes for a staged copy: from the cache, else read once from the source."""

    def read(source: ImageRef, digest: str, size: int) -> bytes:
        return cache.blob(registries.for_ref(source, "src"), source, digest, size)

    return read


def platforms_for(engine: Engine, settings: Settings) -> tuple[Platform, ...]:
    """The platforms a run copies: as asked, except that an engine which keeps one platform per
    image (the Docker engine) copies the one asked for, or its daemon's own."""
    if engine.exact:
        return settings.platforms
    if len(settings.platforms) > 1:
        raise ChaosmirrorError(f"the {engine.name} engine keeps one platform per image: give one --platform, "
                               "or use --engine skopeo to copy several")  # fmt: skip
    return settings.platforms or (engine.platform or Platform("linux", "amd64"),)


def warn_multi_arch(
    observed: dict[Item, Observed], wanted: tuple[Platform, ...], on_phase: Callable[[str], None]
) -> None:
    multi = [i for i, seen in observed.items() if seen.top is not None and len(platform_children(seen.top)) > 1]
    if multi:
        on_phase(f"warning: the Docker engine keeps one platform per image and pushes new manifests: {len(multi)} "
                 f"multi-arch images will be copied as {wanted[0]} only, with new digests (the report records "
                 "them). Use --engine skopeo to keep every platform and the source digests.")  # fmt: skip


def planned_entry(action: Action) -> Entry:
    status: Status = {"copy": "planned", "skip": "skipped", "fail": "failed"}[action.kind]  # type: ignore[assignment]
    return entry_for(action, status, error=action.reason if status == "failed" else "")
