"""Find the image references in what HCE hands its users, each with its file and line.

The inputs are the dedicated chaos infrastructure manifest (multi-document Kubernetes YAML), Helm
values and rendered charts, Harness's self-managed `images.txt` / `images.json`, or a plain list.
References are found where Kubernetes and HCE put them: any `image:` key (every workload kind and
Argo template, with no list of kinds to fall behind), container `args` flags such as
`--executor-image`, env entries and ConfigMap keys named `*IMAGE*` (the operator's runner image,
the log watcher's, `LIB_IMAGE`), YAML embedded in ConfigMap data, the `helm.sh/images` annotation
(Helm HIP-0015; Artifact Hub's `artifacthub.io/images` has the same shape), and
`image: {registry, repository, tag}` maps in values files. Lines come from the YAML nodes' marks.
Pure: text in, findings out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

import yaml

from chaosmirror.errors import ChaosmirrorError, RefError
from chaosmirror.ref import ImageRef

IMAGE_ANNOTATIONS = ("helm.sh/images", "artifacthub.io/images")
_FLAG_RE = re.compile(r"^--?[A-Za-z0-9-]*image[A-Za-z0-9-]*$", re.IGNORECASE)  # --executor-image

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


class ScanError(ChaosmirrorError):
    """A file that cannot be scanned, or a scan that found nothing to write (exit code 2)."""


@dataclass(frozen=True)
class Found:
    """One image reference and where it was written."""

    ref: ImageRef
    file: str
    line: int
    how: str  # "Deployment/chaos-operator-ce: spec.template.spec.containers[0].image"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Skipped:
    """A value in an image position that is no usable reference (no tag, a template, a typo)."""

    text: str
    file: str
    line: int
    reason: str


@dataclass
class Findings:
    found: list[Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# --- finding -------------------------------------------------------------------------------------


def find_images(text: str, file: str) -> Findings:
    """Every image reference in one file's text: a plain list (one per line), else YAML documents."""
    out = Findings()
    if _is_plain_list(text):
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                _take(out, line, file, number, "list entry", strict=True)
        return out
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ScanError(f"{file}: neither YAML nor a list of image references ({_first_line(exc)})") from None
    for root in documents:
        if root is not None:
            _Walk(out, file).document(root)
    unique: dict[tuple[ImageRef, int], Found] = {}  # two rules may see one value: keep the first
    for item in out.found:
        unique.setdefault((item.ref, item.line), item)
    out.found = list(unique.values())
    return out


def _is_plain_list(text: str) -> bool:
    lines = [ln.split(" #", 1)[0].strip() for ln in text.splitlines()]
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    if not entries:
        return False
    for entry in entries:
        try:
            ImageRef.parse(entry)
        except RefError:
            return False
    return True


def _first_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def _take(out: Findings, text: str, file: str, line: int, how: str, *, strict: bool) -> None:
    """Record `text` as a reference. Strict positions (an `image:` key) report what does not parse;
    loose ones (a key that merely mentions images) take only references with a tag or digest."""
    text = text.strip()
    try:
        ref = ImageRef.parse(text)
    except RefError as exc:
        if strict and text:
            out.skipped.append(Skipped(text, file, line, str(exc)))
        return
    if not ref.tag:
        if strict:
            reason = "pinned by digest only: a manifest needs the tag too" if ref.digest else "no tag"
            out.skipped.append(Skipped(text, file, line, reason))
        return
    out.found.append(Found(ref, file, line, how))


class _Walk:
    """Walks one YAML document's nodes, remembering the key path and the object it is in."""

    def __init__(self, out: Findings, file: str, *, shift: int = 1, fixed: int | None = None) -> None:
        self.out = out
        self.file = file
        self.shift = shift  # added to a node's 0-based line: 1 in a file, more in a block string
        self.fixed = fixed  # YAML in a quoted or folded string: every line is the string's own
        self.subject = ""  # "Deployment/subscriber"

    def line(self, node: yaml.Node) -> int:
        return self.fixed if self.fixed is not None else node.start_mark.line + self.shift

    def take(self, node: yaml.Node, how: str, *, strict: bool) -> None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            where = f"{self.subject}: {how}" if self.subject else how
            _take(self.out, str(node.value), self.file, self.line(node), where, strict=strict)

    def document(self, root: yaml.Node) -> None:
        if isinstance(root, yaml.MappingNode):
            fields = _scalars(root)
            kind, name = fields.get("kind", ""), _metadata_name(root)
            self.subject = f"{kind}/{name}" if kind and name else kind
        if isinstance(root, yaml.SequenceNode) and all(isinstance(n, yaml.ScalarNode) for n in root.value):
            for i, item in enumerate(root.value):  # a YAML list of references
                self.take(item, f"[{i}]", strict=True)
            return
        self.node(root, "")

    def node(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            self.mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.node(item, f"{path}[{i}]")
        elif isinstance(node, yaml.ScalarNode) and _names_a_registry(str(node.value)):
            self.take(node, path, strict=False)  # a fully qualified reference anywhere

    def mapping(self, node: yaml.MappingNode, path: str) -> None:
        fields = _scalars(node)
        name = fields.get("name", "")
        if "value" in fields and "image" in name.lower():  # env: {name: CHAOS_RUNNER_IMAGE, value: ...}
            self.take(_value_node(node, "value"), f"{path} {name}", strict=True)
            return
        for key_node, value in node.value:
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            lowered = key.lower()
            if key in IMAGE_ANNOTATIONS and isinstance(value, yaml.ScalarNode):
                self.embedded(value, f"annotation {key}")
            elif "image" in lowered and isinstance(value, yaml.MappingNode) and "repository" in _scalars(value):
                self.image_map(value, sub)
            elif "image" in lowered and isinstance(value, yaml.ScalarNode):
                self.take(value, sub, strict=lowered == "image")
            elif "image" in lowered and isinstance(value, yaml.SequenceNode):
                for i, item in enumerate(value.value):  # images.json: "images": [refs]
                    self.take(item, f"{sub}[{i}]", strict=False)
            elif key in ("args", "command") and isinstance(value, yaml.SequenceNode):
                self.flags(value, sub)
            elif key == "data" and self.subject.startswith("ConfigMap") and isinstance(value, yaml.MappingNode):
                self.config_data(value, sub)
            else:
                self.node(value, sub)

    def image_map(self, node: yaml.MappingNode, path: str) -> None:
        """`image: {registry: docker.io, repository: harness/chaos-subscriber, tag: "1.47.0"}`."""
        fields = _scalars(node)
        repository = fields["repository"]
        registry = fields.get("registry", "")
        text = f"{registry}/{repository}" if registry and not repository.startswith(registry + "/") else repository
        if fields.get("tag"):
            text += f":{fields['tag']}"
        if fields.get("digest"):
            text += f"@{fields['digest']}"
        where = f"{self.subject}: {path}" if self.subject else path
        line = self.line(_value_node(node, "repository"))
        _take(self.out, text, self.file, line, f"{where} (registry/repository/tag)", strict=True)

    def flags(self, node: yaml.SequenceNode, path: str) -> None:
        """`args: [--executor-image, REF]` or `[--executor-image=REF]`."""
        items = node.value
        value_of_flag = False
        for i, item in enumerate(items):
            if value_of_flag or not isinstance(item, yaml.ScalarNode):
                value_of_flag = False
                continue
            text = str(item.value)
            flag, eq, rest = text.partition("=")
            if _FLAG_RE.match(flag) and eq:
                where = f"{self.subject}: {path} {flag}" if self.subject else f"{path} {flag}"
                _take(self.out, rest, self.file, self.line(item), where, strict=True)
            elif _FLAG_RE.match(text) and i + 1 < len(items):
                self.take(items[i + 1], f"{path} {text}", strict=True)
                value_of_flag = True
            elif _names_a_registry(text):
                self.take(item, f"{path}[{i}]", strict=False)

    def config_data(self, node: yaml.MappingNode, path: str) -> None:
        """ConfigMap data: keys naming an image, and YAML documents kept in a value."""
        for key_node, value in node.value:
            key = str(key_node.value)
            if not isinstance(value, yaml.ScalarNode):
                continue
            if "image" in key.lower():
                self.take(value, f"{path}.{key}", strict=True)
            elif "\n" in str(value.value):
                self.embedded(value, f"{path}.{key}")
            elif _names_a_registry(str(value.value)):
                self.take(value, f"{path}.{key}", strict=False)

    def embedded(self, value: yaml.ScalarNode, how: str) -> None:
        """YAML inside a string (a ConfigMap's config file, the helm.sh/images list); a literal block
        (`|`) keeps its lines, so those are exact; other styles point at the string's first line."""
        try:
            documents = list(yaml.compose_all(str(value.value), Loader=_Loader))
        except yaml.YAMLError:
            return
        if value.style == "|" and self.fixed is None:
            inner = _Walk(self.out, self.file, shift=self.line(value) + 1)
        else:
            inner = _Walk(self.out, self.file, fixed=self.line(value))
        inner.subject = f"{self.subject}: {how}" if self.subject else how
        for root in documents:
            if isinstance(root, yaml.SequenceNode):  # the annotation: [{name, image}, ...] or [refs]
                for i, item in enumerate(root.value):
                    if isinstance(item, yaml.MappingNode) and "image" in _scalars(item):
                        inner.take(_value_node(item, "image"), f"[{i}].image", strict=True)
                    else:
                        inner.take(item, f"[{i}]", strict=True)
            elif root is not None:
                inner.node(root, "")


def _scalars(node: yaml.MappingNode) -> dict[str, str]:
    return {
        str(k.value): str(v.value)
        for k, v in node.value
        if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
    }


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node:
    return cast(yaml.Node, next(v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key))


def _metadata_name(root: yaml.MappingNode) -> str:
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "metadata" and isinstance(v, yaml.MappingNode):
            return _scalars(v).get("name", "")
    return ""


def _names_a_registry(text: str) -> bool:
    """A string that starts with a registry host and a path, like docker.io/harness/x:1 (cheap test)."""
    first, slash, _ = text.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost") and " " not in text
