"""Survey: read what a plan needs from the registries, in parallel, copying nothing.

Two passes. First a HEAD of each source tag (its digest; free on Docker Hub) and of each
destination tag. Then, only for what is not already in the target, the manifests a copy will move:
each read by digest through the local cache (`cache.ManifestCache`), so a rerun of an unchanged
release GETs no manifest and a cold run GETs each one once. Between the passes, a source that
counts pulls (Docker Hub's `ratelimit-remaining`) is checked against what the run will GET.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chaosmirror.cache import ManifestCache
from chaosmirror.errors import ChaosmirrorError, Interrupted, RegistryError
from chaosmirror.manifest import Manifest, Platform
from chaosmirror.plan import Item, Observed, choose, manifests_to_read
from chaosmirror.ref import ImageRef
from chaosmirror.registry import Head, Registries

FAR_SECONDS = 0.015  # a target whose round trip takes longer than this is "far"


def check_target(registries: Registries, host: str, far: float = FAR_SECONDS) -> float:
    """Fail early, with one clear message, when the target is unreachable or refuses our credentials.
    Return the target's round-trip time in seconds: of an authenticated request on an open
    connection (two, when the first takes `far` or longer: it may have fetched a token)."""
    target = registries.get(host, "dest")
    target.connect()
    started = time.monotonic()
    target.ping()
    first = time.monotonic() - started
    if first < far:
        return first
    started = time.monotonic()  # the first may have fetched a token: time one more
    target.ping()
    return min(first, time.monotonic() - started)


@dataclass(frozen=True)
class Peek:
    """The first pass for one item: HEADs only."""

    source: Head | None = None  # None with no error: the source has no such tag
    target_digest: str | None = None
    error: str = ""
    target_error: str = ""


def _where(item: Item) -> str:
    return f" (read from {item.pull})" if item.pull != item.src else ""


def peek(item: Item, registries: Registries, *, target: bool = True) -> Peek:
    """HEAD the source tag and (with `target`) the destination tag; failures become the item's."""
    assert isinstance(item.pull, ImageRef)
    try:
        head = registries.for_ref(item.pull, "src").head(item.pull)
    except RegistryError as exc:
        return Peek(error=f"{exc}{_where(item)}")
    if head is None:
        return Peek(error=f"not found in the source{_where(item)}")
    try:
        held = registries.for_ref(item.dst, "dest").digest(item.dst) if target else None
    except RegistryError as exc:
        return Peek(head, target_error=f"cannot tell what the target holds: {exc}")
    return Peek(head, held)


def observe(item: Item, registries: Registries, wanted: tuple[Platform, ...], *, target: bool = True,
            configs: bool = False, cache: ManifestCache | None = None, peeked: Peek | None = None,
            alone: bool = False) -> Observed:  # fmt: skip
    """Everything the plan needs of one item. Source problems become `error`, target problems
    `target_error` (after the transport's retries): one bad answer fails one image, not the run.
    Without `target` (an export), the target is not asked and every platform manifest is read.
    With `configs`, the config digests of what the target holds are read too (see Observed).
    `alone`: one platform of an index is copied as its manifest alone (the Docker engine)."""
    assert isinstance(item.pull, ImageRef)
    cache = cache or ManifestCache(None)
    seen = peeked or peek(item, registries, target=target)
    if seen.error or seen.source is None:
        return Observed(error=seen.error or f"not found in the source{_where(item)}")
    source = registries.for_ref(item.pull, "src")
    try:
        top = cache.manifest(source, item.pull.with_digest(seen.source.digest), seen.source.media_type)
    except RegistryError as exc:
        return Observed(error=f"{exc}{_where(item)}")
    if seen.target_error:
        return Observed(top, target_error=seen.target_error)
    target_digest = seen.target_digest
    try:
        platform = None
        if not top.is_index and (wanted or not target):  # an export records every image's platform
            config = top.config()
            platform = Platform.from_json(json.loads(cache.blob(source, item.pull, config.digest, config.size)))
        selection = choose(top, wanted, platform, alone=alone)
        children: dict[str, Manifest] = {}
        if target_digest != selection.digest and not selection.error:
            for desc in manifests_to_read(top, selection):
                children[desc.digest] = cache.manifest(source, item.pull.with_digest(desc.digest), desc.media_type)
    except (RegistryError, ValueError) as exc:
        return Observed(top, target_digest, error=f"{exc}{_where(item)}")
    try:
        held = target_configs(registries, item.dst) if configs and target_digest else frozenset()
    except RegistryError as exc:
        return Observed(top, target_digest, children, platform, target_error=f"cannot read the target's image: {exc}")
    return Observed(top, target_digest, children, platform, target_configs=held)


def _guarded(item: Item, registries: Registries, wanted: tuple[Platform, ...], **options: object) -> Observed:
    """`observe`, with any failure of one item kept to that item (a stop still stops the survey)."""
    try:
        return observe(item, registries, wanted, **options)  # type: ignore[arg-type]
    except Interrupted:
        raise
    except ChaosmirrorError as exc:
        return Observed(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in one image's survey must not end the run
        return Observed(error=f"internal error while reading it: {type(exc).__name__}: {exc}")


def _guarded_peek(item: Item, registries: Registries, target: bool) -> Peek:
    try:
        return peek(item, registries, target=target)
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - as above
        return Peek(error=f"internal error while reading it: {type(exc).__name__}: {exc}")


def target_configs(registries: Registries, dst: ImageRef) -> frozenset[str]:
    """Config digests of the image (or of each platform of the index) the target holds at `dst`."""
    from chaosmirror.errors import NotFoundError

    dest = registries.for_ref(dst, "dest")
    try:
        top = dest.manifest(dst)
        manifests = [dest.manifest(dst.with_digest(d.digest)) for d in top.children()] if top.is_index else [top]
    except NotFoundError:
        return frozenset()
    return frozenset(m.config().digest for m in manifests if not m.is_index)


def pull_warning(items: list[Item], peeks: dict[Item, Peek], cache: ManifestCache) -> str:
    """A warning when a source that counts pulls (Docker Hub) has fewer left than this run needs:
    one manifest GET for each image to copy whose manifest is not in the local cache (and more for
    the platforms of an index). "" when there is enough, or the source does not say."""
    remaining: dict[str, tuple[int, int | None]] = {}
    needed: dict[str, int] = {}
    for item in items:
        seen = peeks[item]
        if seen.source is None or not isinstance(item.pull, ImageRef):
            continue
        host = item.pull.registry
        if seen.source.remaining is not None:
            low = min(seen.source.remaining, remaining.get(host, (seen.source.remaining, None))[0])
            remaining[host] = (low, seen.source.limit)
        if seen.target_digest != seen.source.digest and cache.get(seen.source.digest) is None:
            needed[host] = needed.get(host, 0) + 1
    out = []
    for host, (left, limit) in sorted(remaining.items()):
        if needed.get(host, 0) > left:
            of = f" of {limit}" if limit is not None else ""
            out.append(f"warning: {host} allows {left} more pulls{of} in its current window (ratelimit-remaining), "
                       f"and this run needs at least {needed[host]} manifest reads there: images past the limit "
                       "will fail with HTTP 429. Log in (CHAOSMIRROR_SRC_USERNAME / CHAOSMIRROR_SRC_PASSWORD) for a "
                       "higher limit, read through --source-mirror, or run again after the window")  # fmt: skip
    return "\n".join(out)


def survey(
    items: list[Item],
    registries: Registries,
    wanted: tuple[Platform, ...] = (),
    *,
    jobs: int = 8,
    target: bool = True,
    configs: bool = False,
    cache: ManifestCache | None = None,
    alone: bool = False,
    on_item: Callable[[Item, Observed], None] | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> dict[Item, Observed]:
    """Observe every item with `jobs` threads; a failure is the item's; Interrupted ends the survey.
    `note` gets the pull-limit warning, before any manifest is read."""
    cache = cache or ManifestCache(None)
    out: dict[Item, Observed] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items) or 1))) as pool:
        peeks = dict(zip(items, pool.map(lambda item: _guarded_peek(item, registries, target), items), strict=True))
        warning = pull_warning(items, peeks, cache)
        if warning:
            note(warning)
        futures = {item: pool.submit(_guarded, item, registries, wanted, target=target, configs=configs, cache=cache,
                                     peeked=peeks[item], alone=alone) for item in items}  # fmt: skip
        for item, future in futures.items():
            out[item] = future.result()
            if on_item:
                on_item(item, out[item])
    return out
