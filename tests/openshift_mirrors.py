"""OpenShift's mirror sets, as the cluster reads them, for tests (no OpenShift runs here).

Validation: the objects are checked against the OpenAPI v3 schemas of the ImageTagMirrorSet and
ImageDigestMirrorSet CRDs (tests/schemas/openshift/, from github.com/openshift/api), strictly, as
`oc apply` with server-side field validation "Strict" does: a field the schema does not declare fails,
and an `x-kubernetes-list-type: set` list may not repeat an item. `metadata`, which the CRD schema
leaves open, is checked against Kubernetes' ObjectMeta with kubernetes-validate.

Resolution, as the CRD field descriptions in openshift/api (config/v1/types_image_tag_mirror_set.go,
types_image_digest_mirror_set.go) define it:
- "source matches the repository that users refer to, e.g. in image pull specifications" and is one of
  host[:port], host[:port]/namespace[/namespace…], host[:port]/namespace[/namespace…]/repo, [*.]host,
  "for more information about the format, see the document about the location field" of
  containers-registries.conf(5): a reference matches when it starts with the source followed by `/`,
  `:` or `@`, or equals it (containers/image pkg/sysregistriesv2/system_registries_v2.go,
  refMatchingPrefix), which the Machine Config Operator renders the sets into;
- "If the image pull specification matches the repository of "source" in multiple ... objects, only the
  objects which define the most specific namespace match will be used": the longest source wins;
- "The mirrored location is obtained by replacing the part of the input reference that matches source
  by the mirrors entry"; mirrors are tried in their order, then the source unless `mirrorSourcePolicy`
  is NeverContactSource;
- an ImageTagMirrorSet serves references by tag only, an ImageDigestMirrorSet references by digest only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from chaosmirror.ref import ImageRef

SCHEMAS = Path(__file__).parent / "schemas" / "openshift"
KINDS = {
    "ImageTagMirrorSet": ("imagetagmirrorsets.config.openshift.io.v1.yaml", "imageTagMirrors"),
    "ImageDigestMirrorSet": ("imagedigestmirrorsets.config.openshift.io.v1.yaml", "imageDigestMirrors"),
}


class MirrorSetError(ValueError):
    """The object is not one OpenShift would accept, or its rules do not say where an image comes from."""


def _strict(node: Any) -> Any:
    """The schema with every declared object closed (`additionalProperties: false`)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out and "x-kubernetes-preserve-unknown-fields" not in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def schema(kind: str) -> dict[str, Any]:
    file, _ = KINDS[kind]
    return _strict(yaml.safe_load((SCHEMAS / file).read_text()))  # type: ignore[no-any-return]


def _sets_are_unique(node: dict[str, Any], value: Any, where: str) -> None:
    """`x-kubernetes-list-type: set`: the API server refuses a list that repeats an item."""
    if (
        isinstance(value, list)
        and node.get("x-kubernetes-list-type") == "set"
        and len(set(map(str, value))) != len(value)
    ):
        raise MirrorSetError(f"{where}: duplicate items in a list of type set: {value}")
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in node.get("properties", {}):
                _sets_are_unique(node["properties"][key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in node:
        for i, sub in enumerate(value):
            _sets_are_unique(node["items"], sub, f"{where}[{i}]")


def validate(doc: dict[str, Any], validate_metadata: Any) -> None:
    """Raise MirrorSetError unless `doc` is a valid mirror set. `validate_metadata(doc)` checks a
    Kubernetes object (kubernetes-validate, strict), used here on `metadata` inside a ConfigMap."""
    kind = doc.get("kind")
    if doc.get("apiVersion") != "config.openshift.io/v1" or kind not in KINDS:
        raise MirrorSetError(f"not a config.openshift.io/v1 mirror set: {doc.get('apiVersion')} {kind}")
    try:
        jsonschema.Draft202012Validator(schema(kind)).validate(doc)
    except jsonschema.ValidationError as exc:
        raise MirrorSetError(f"{kind}: {exc.json_path}: {exc.message}") from None
    _sets_are_unique(schema(kind), doc, kind)
    if "namespace" in doc["metadata"]:
        raise MirrorSetError(f"{kind} is cluster-scoped: metadata.namespace is not allowed")
    validate_metadata({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})


@dataclass(frozen=True)
class Rule:
    source: str
    mirrors: tuple[str, ...]
    policy: str


def rules(doc: dict[str, Any]) -> list[Rule]:
    _, field = KINDS[doc["kind"]]
    return [
        Rule(e["source"], tuple(e.get("mirrors", ())), e.get("mirrorSourcePolicy", "AllowContactingSource"))
        for e in doc["spec"].get(field, [])
    ]


def _matches(reference: str, source: str) -> bool:
    return reference == source or (reference.startswith(source) and reference[len(source)] in "/:@")


def resolve(doc: dict[str, Any], ref: ImageRef) -> list[ImageRef]:
    """Where a node pulls `ref` from under this mirror set, in order (mirrors, then the source when the
    policy allows). A reference the set does not serve (by tag for digest sets, and the reverse) is
    pulled from its own name only."""
    by_digest = bool(ref.digest)
    serves = doc["kind"] == ("ImageDigestMirrorSet" if by_digest else "ImageTagMirrorSet")
    reference = str(ref)
    every = rules(doc)
    if any(r.source.startswith("*.") for r in every):
        raise MirrorSetError("a wildcard source (*.host): this reader does not handle them")
    found = [r for r in every if serves and _matches(reference, r.source)]
    if not found:
        return [ref]
    longest = max(len(r.source) for r in found)
    chosen = [r for r in found if len(r.source) == longest]
    order = [ImageRef.parse(m + reference[longest:]) for r in chosen for m in r.mirrors]
    if all(r.policy != "NeverContactSource" for r in chosen):
        order.append(ref)
    return list(dict.fromkeys(order))
