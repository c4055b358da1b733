"""Survey: read what a plan needs from the registries, in parallel, copying nothing.

For each item: the source's top manifest (its digest), what the target holds at the tag (one HEAD),
and only when a copy is due, the platform manifests that list every blob the copy will move.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from chaosmirror.errors import ChaosmirrorError, Interrupted, NotFoundError, RegistryError
from chaosmirror.manifest import Manifest, Platform
from chaosmirror.plan import Item, Observed, choose, manifests_to_read
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Registries


def check_target(registries: Registries, host: str) -> float:
    """Fail early, with one clear message, when the target is unreachable or refuses our credentials.
    Return the target's round-trip time in seconds (an authenticated request on an open connection)."""
    target = registries.get(host, "dest")
    target.ping()
    started = time.monotonic()
    target.ping()
    return time.monotonic() - started


def observe(item: Item, registries: Registries, wanted: tuple[Platform, ...], *, target: bool = True,
            configs: bool = False) -> Observed:  # fmt: skip
    """Everything the plan needs of one item. Source problems become `error`, target problems
    `target_error` (after the transport's retries): one bad answer fails one image, not the run.
    Without `target` (an export), the target is not asked and every platform manifest is read.
    With `configs`, the config digests of what the target holds are read too (see Observed)."""
    assert isinstance(item.pull, ImageRef)
    source = registries.for_ref(item.pull, "src")
    where = f" (read from {item.pull})" if item.pull != item.src else ""
    try:
        top = source.manifest(item.pull)
    except NotFoundError:
        return Observed(error=f"not found in the source{where}")
    except RegistryError as exc:
        return Observed(error=f"{exc}{where}")
    try:
        target_digest = registries.for_ref(item.dst, "dest").digest(item.dst) if target else None
    except RegistryError as exc:
        return Observed(top, error="", target_error=f"cannot tell what the target holds: {exc}")
    try:
        platform = None
        if not top.is_index and (wanted or not target):  # an export records every image's platform
            config = json.loads(source.blob(item.pull, top.config().digest))
            platform = Platform.from_json(config)
        selection = choose(top, wanted, platform)
        children: dict[str, Manifest] = {}
        if target_digest != selection.digest and not selection.error:
            for desc in manifests_to_read(top, selection):
                children[desc.digest] = source.manifest(item.pull.with_digest(desc.digest))
    except (RegistryError, ValueError) as exc:
        return Observed(top, target_digest, error=f"{exc}{where}")
    try:
        held = target_configs(registries, item.dst) if configs and target_digest else frozenset()
    except RegistryError as exc:
        return Observed(top, target_digest, children, platform, target_error=f"cannot read the target's image: {exc}")
    return Observed(top, target_digest, children, platform, target_configs=held)


def _guarded(item: Item, registries: Registries, wanted: tuple[Platform, ...], target: bool,
             configs: bool) -> Observed:  # fmt: skip
    """`observe`, with any failure of one item kept to that item (a stop still stops the survey)."""
    try:
        return observe(item, registries, wanted, target=target, configs=configs)
    except Interrupted:
        raise
    except ChaosmirrorError as exc:
        return Observed(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in one image's survey must not end the run
        return Observed(error=f"internal error while reading it: {type(exc).__name__}: {exc}")


def target_configs(registries: Registries, dst: ImageRef) -> frozenset[str]:
    """Config digests of the image (or of each platform of the index) the target holds at `dst`."""
    dest = registries.for_ref(dst, "dest")
    try:
        top = dest.manifest(dst)
        manifests = [dest.manifest(dst.with_digest(d.digest)) for d in top.children()] if top.is_index else [top]
    except NotFoundError:
        return frozenset()
    return frozenset(m.config().digest for m in manifests if not m.is_index)


def survey(
    items: list[Item],
    registries: Registries,
    wanted: tuple[Platform, ...] = (),
    *,
    jobs: int = 8,
    target: bool = True,
    configs: bool = False,
    on_item: Callable[[Item, Observed], None] | None = None,
) -> dict[Item, Observed]:
    """Observe every item with `jobs` threads; a failure is the item's; Interrupted ends the survey."""
    out: dict[Item, Observed] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items) or 1))) as pool:
        futures = {item: pool.submit(_guarded, item, registries, wanted, target, configs) for item in items}
        for item, future in futures.items():
            out[item] = future.result()
            if on_item:
                on_item(item, out[item])
    return out
