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
    assert not clashes and not gate.pending


def test_a_blob_being_seeded_holds_back_only_the_tasks_that_hold_it():
    free = action("free", Part(M1, ((C, 1),), 1))
    held = action("held", Part(M1, ((A, 1),), 1))
    gate = _Gate([Task(a, a.parts[0], a.item.src, a.item.dst) for a in (held, free)], {A})
    task, _ = gate.take()  # type: ignore[misc]
    assert task.action is free
    gate.release({A}, ok=True)  # the seeder finished A
    task, mine = gate.take()  # type: ignore[misc]
    assert task.action is held and mine == set()  # A is already in the target


def test_shared_layers_are_those_in_two_repositories():
    one, two = item("one"), item("two")
    layers = shared_layers(
        [(one.src, one.dst, ((A, 5), (B, 9))), (two.src, two.dst, ((A, 5), (C, 1))), (one.src, one.dst, ((B, 9),))]
    )  # B twice, but in one repository
    assert [(x.digest, x.home.repository, [m.repository for m in x.mounts]) for x in layers] == [
        (A, "harness/one", ["harness/two"])
    ]
