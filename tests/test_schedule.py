"""The scheduler's pure parts: tasks, the blob gate, shared layers."""

from __future__ import annotations

import threading
import time

from chaosmirror.layers import shared_layers
from chaosmirror.mirror import Task, _Gate, tasks_for
from chaosmirror.plan import Action, Item, Part, Selection
from chaosmirror.ref import ImageRef
from tests.test_plan import TARGET

A, B, C = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
M1, M2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def item(name: str) -> Item:
    src = ImageRef.parse(f"docker.io/harness/{name}:1")
    return Item(src, src, TARGET.place(src), ())


def action(name: str, *parts: Part, index: bool = False) -> Action:
    sel = Selection(M1, (), tuple(), None)
    if index:
        from chaosmirror.manifest import Manifest

        sel = Selection(M1, (), (), Manifest(b"{}", "application/vnd.oci.image.index.v1+json", M1))
    return Action("copy", item(name), M1, M1, sel, parts)


def test_an_index_is_one_copy_near_and_one_copy_per_platform_far():
    act = action("x", Part(M1, ((A, 10),), 20), Part(M2, ((B, 10),), 20), index=True)
    (whole,) = tasks_for(act, split=False)
    assert whole.dst == act.item.dst and whole.part.blobs == {A, B}
    split = tasks_for(act, split=True)
    assert [t.dst.digest for t in split] == [M1, M2]


def test_the_gate_never_runs_two_tasks_that_would_upload_one_blob():
    tasks = [
        Task(a, a.parts[0], a.item.src, a.item.dst)
        for a in (
            action("one", Part(M1, ((A, 1), (B, 1)), 2)),
            action("two", Part(M1, ((A, 1), (C, 1)), 2)),
            action("three", Part(M1, ((C, 1),), 1)),
        )
    ]
    gate = _Gate(tasks, set())
    running: set[str] = set()
    clashes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (taken := gate.take()) is not None:
            task, mine = taken
            with lock:
                if mine & running:
                    clashes.append(task.action.item.src.name)
                running.update(mine)
            time.sleep(0.02)
            with lock:
                running.difference_update(mine)
            gate.release(mine, ok=True)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert not clashes and gate.left == 0


def test_a_blob_being_seeded_holds_back_only_the_tasks_that_hold_it():
    free = action("free", Part(M1, ((C, 1),), 1))
    held = action("held", Part(M1, ((A, 1),), 1))
    gate = _Gate([Task(a, a.parts[0], a.item.src, a.item.dst) for a in (held, free)], {A})
    task, _ = gate.take()  # type: ignore[misc]
    assert task.action is free
    gate.release({A}, ok=True)  # the seeder finished A
    task, mine = gate.take()  # type: ignore[misc]
    assert task.action is held and mine == set()  # A is already in the target


class ScanningGate:
    """The gate as it was first written, a scan of every pending task: what `_Gate` must agree with."""

    def __init__(self, tasks: list[Task], seeding: set[str]) -> None:
        self.pending = sorted(tasks, key=lambda t: -t.part.size)
        self.claimed, self.done = set(seeding), set()

    def take(self) -> tuple[Task, set[str]] | None:
        for task in self.pending:
            mine = set(task.part.blobs - self.done)
            if not mine & self.claimed:
                self.pending.remove(task)
                self.claimed |= mine
                return task, mine
        return None

    def release(self, blobs: set[str], *, ok: bool) -> None:
        self.claimed -= blobs
        if ok:
            self.done |= blobs


def test_the_gate_hands_out_what_a_scan_of_every_task_would():
    """Random runs (shared, seeded and failing blobs, out-of-order releases): at every step both
    gates give the same task and the same blobs, or both have nothing to give yet."""
    import random

    rng = random.Random(13)
    for _ in range(40):
        digests = [f"sha256:{n:064x}" for n in range(rng.randint(2, 12))]
        tasks = []
        for n in range(rng.randint(1, 30)):
            blobs = tuple((d, 1) for d in rng.sample(digests, rng.randint(1, min(4, len(digests)))))
            act = action(f"i{n}", Part(M1, blobs, rng.randint(1, 5)))
            tasks.append(Task(act, act.parts[0], act.item.src, act.item.dst))
        seeding = set(rng.sample(digests, rng.randint(0, len(digests))))
        fast, slow = _Gate(tasks, set(seeding)), ScanningGate(tasks, set(seeding))
        held: list[set[str]] = [{d} for d in seeding]  # what the seeder and the running tasks hold
        while True:
            want = slow.take()
            got = gate_take_now(fast)
            assert (got and (got[0], got[1])) == (want and (want[0], want[1]))
            if got:
                held.append(got[1])
            elif not held:
                break
            if held and (not got or rng.random() < 0.5):
                blobs = held.pop(rng.randrange(len(held)))
                ok = rng.random() < 0.8
                fast.release(blobs, ok=ok)
                slow.release(blobs, ok=ok)
        assert fast.left == 0 and not slow.pending


def test_the_gate_reads_each_task_s_blobs_once_however_many_blobs_are_released():
    """A big run (every release: about 700 tasks, 1 800 seeded blobs, 16 workers woken by each)
    must not cost a pass over the pending tasks per blob: the first gate recomputed the blobs of
    every pending task at each wake-up (62 738 reads here)."""
    reads = [0]

    class CountedPart(Part):
        @property
        def blobs(self) -> frozenset[str]:
            reads[0] += 1
            return frozenset(d for d, _ in self.layers)

    digests = [f"sha256:{n:064x}" for n in range(200)]
    tasks = []
    for n in range(100):
        part = CountedPart(M1, tuple((d, 1) for d in digests[n * 2 : n * 2 + 2]), n)
        act = action(f"i{n}", part)
        tasks.append(Task(act, part, act.item.src, act.item.dst))
    gate = _Gate(tasks, set(digests))
    taken: list[Task] = []

    def worker() -> None:  # as mirror.run's workers: wait in take, woken at each release
        while (got := gate.take()) is not None:
            taken.append(got[0])
            gate.release(got[1], ok=True)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for t in workers:
        t.start()
    for digest in digests[0::2] + digests[1::2]:  # the seeder: no task is complete before the last half
        gate.release({digest}, ok=True)
        time.sleep(0.001)
    for t in workers:
        t.join(timeout=10)
    assert len(taken) == len(tasks) and gate.left == 0
    assert reads[0] <= len(tasks), f"{reads[0]} reads of the tasks' blobs for {len(tasks)} tasks"


def gate_take_now(gate: _Gate) -> tuple[Task, set[str]] | None:
    """`take` without waiting: None when no task can start now (a stopped run ends the wait)."""
    from chaosmirror.lifecycle import Run

    with gate.cond:
        ready = any(not gate.taken[n] and not gate.blocked[n] for n in range(len(gate.tasks)))
    if not ready:
        return None
    return gate.take(Run())


def test_shared_layers_are_those_in_two_repositories():
    one, two = item("one"), item("two")
    layers = shared_layers(
        [(one.src, one.dst, ((A, 5), (B, 9))), (two.src, two.dst, ((A, 5), (C, 1))), (one.src, one.dst, ((B, 9),))]
    )  # B twice, but in one repository
    assert [(x.digest, x.home.repository, [m.repository for m in x.mounts]) for x in layers] == [
        (A, "harness/one", ["harness/two"])
    ]
