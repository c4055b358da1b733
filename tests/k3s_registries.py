"""A strict reader of RKE2 / K3s `registries.yaml` for tests (no k3s or rke2 binary runs here offline).

It applies the documented semantics and refuses anything it does not know. Sources:

- https://docs.k3s.io/installation/private-registry (github.com/k3s-io/docs:
  docs/installation/private-registry.md); RKE2 documents the same file
  (https://docs.rke2.io/install/private_registry):
  - "When pulling an image from a registry, containerd will try these endpoint URLs, plus the default
    endpoint, and use the first working one"; "The default endpoint is always tried as a last resort
    ... Rewrites are not applied to pulls against the default endpoint"; the default endpoint of
    docker.io is Docker Hub's, of any other registry `https://<REGISTRY>/v2`;
  - rewrites "use regular expressions to match and transform the name of an image when it is pulled
    from a mirror ... Rewrites match and transform only the image name, NOT the tag"
    (example `"^rancher/(.*)": "mirrorproject/rancher-images/$1"`);
  - `configs` "defines the TLS and credential configuration for each mirror", keyed by the mirror's
    host; "In case of no TLS communication, you need to specify `http://` for the endpoints, otherwise
    it will default to https".
- github.com/k3s-io/k3s pkg/agent/containerd/config.go: `normalizeEndpointAddress` (no scheme: https,
  or http for localhost on a port other than 443; a path of "", "/" or "/v2" is the API root `/v2`, any
  other path is the API root itself, `override_path`), `getHostConfigs` (endpoints keep their order, an
  endpoint equal to the default one is the default; rewrites are copied to each mirror endpoint) and
  `configForHost` (the config of an endpoint is `configs[<endpoint host>]`).
- github.com/rancher/wharfie pkg/registries: the schema. `mirrors.<registry>`: `endpoint` (list of
  URLs), `rewrite` (map); `configs.<host>`: `auth` (`username`, `password`, `auth`, `identity_token`) and
  `tls` (`ca_file`, `cert_file`, `key_file`, `insecure_skip_verify`). `auths` is deprecated. Any other
  key fails here.
- The patterns are Go regular expressions, replaced with `ReplaceAllString`, whose template expands
  `$1` / `${1}` (https://pkg.go.dev/regexp#Regexp.Expand). RKE2/K3s keep no order among rewrites
  (github.com/rancher/rke2/issues/3227), so a repository that two patterns match is refused as ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from chaosmirror.ref import DOCKER_HUB, ImageRef, is_loopback

DOCKER_HUB_HOST = "registry-1.docker.io"  # containerd's docker.DefaultHost("docker.io")
TOP_KEYS = {"mirrors", "configs"}
MIRROR_KEYS = {"endpoint", "rewrite"}
CONFIG_KEYS = {"auth", "tls"}
AUTH_KEYS = {"username", "password", "auth", "identity_token"}
TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}


class RegistriesError(ValueError):
    """registries.yaml that RKE2/K3s would not read the way chaosmirror means it."""


class _UniqueKeys(yaml.SafeLoader):
    """Go's YAML decoder refuses a mapping that repeats a key; PyYAML would keep the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = {k for k in keys if keys.count(k) > 1}
        if repeated:
            raise RegistriesError(f"line {node.start_mark.line + 1}: repeated keys {sorted(map(str, repeated))}")
        return super().construct_mapping(node, deep=deep)


def _keys(where: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RegistriesError(f"{where}: a mapping is expected, not {type(value).__name__}")
    unknown = set(map(str, value)) - allowed
    if unknown:
        raise RegistriesError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(allowed)})")
    return value


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistriesError(f"{where}: a mapping is expected, not {type(value).__name__}")
    return value


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RegistriesError(f"{where}: a string is expected, not {value!r}")
    return value


@dataclass(frozen=True)
class Endpoint:
    """One place containerd asks: scheme, host, API root; the rewrites and config that go with it."""

    scheme: str
    host: str
    api_root: str
    rewrites: tuple[tuple[str, str], ...] = ()
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    default: bool = False


@dataclass(frozen=True)
class Pull:
    endpoint: Endpoint
    repository: str
    reference: str

    @property
    def path(self) -> str:
        return f"{self.endpoint.api_root}/{self.repository}/manifests/{self.reference}"

    @property
    def url(self) -> str:
        return f"{self.endpoint.scheme}://{self.endpoint.host}{self.path}"


def normalize_endpoint(text: str) -> tuple[str, str, str]:
    """(scheme, host, API root) of an endpoint, as k3s's normalizeEndpointAddress makes it."""
    url = urlsplit(text if "://" in text else "//" + text)
    if url.query or url.fragment or not url.hostname:
        raise RegistriesError(f"endpoint {text!r}: not a URL with a host")
    scheme = url.scheme
    if not scheme:
        odd_port = url.port is not None and url.port != 443
        scheme = "http" if is_loopback(url.netloc) and odd_port else "https"
    if scheme not in {"http", "https"}:
        raise RegistriesError(f"endpoint {text!r}: scheme {scheme!r}")
    host = DOCKER_HUB_HOST if url.netloc == DOCKER_HUB else url.netloc
    root = url.path if url.path not in {"", "/", "/v2"} else "/v2"
    return scheme, host, root.rstrip("/")


def go_expand(template: str, match: re.Match[str]) -> str:
    """Go's regexp.Expand: `$name` / `${name}` (digits: a group number), `$$` is `$`; a reference to a
    missing group is empty; a malformed `$` stays as it is."""
    out, i = [], 0
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 == len(template):
            out.append(c)
            i += 1
            continue
        if template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if template[i + 1] == "{":
            end = template.find("}", i + 2)
            name = template[i + 2 : end] if end != -1 else ""
            after = end + 1
        else:
            found = re.match(r"[A-Za-z0-9_]+", template[i + 1 :])
            name = found.group(0) if found else ""
            after = i + 1 + len(name)
        if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            out.append("$")
            i += 1
            continue
        try:
            group = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group: Go expands it to nothing
            group = None
        out.append(group or "")
        i = after
    return "".join(out)


@dataclass(frozen=True)
class Registries:
    mirrors: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]
    configs: dict[str, dict[str, Any]]

    def config_for(self, host: str) -> dict[str, Any]:
        if host == DOCKER_HUB_HOST and host not in self.configs:
            return self.configs.get(DOCKER_HUB, {})
        return self.configs.get(host, {})

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where containerd asks for an image of `registry`, in order; the default endpoint last."""
        scheme, host, root = normalize_endpoint(registry)
        default = Endpoint(scheme, host, root, config=self.config_for(host), default=True)
        entry = self.mirrors.get(registry) or self.mirrors.get("*")
        if entry is None:
            return [default]
        urls, rewrites = entry
        out: list[Endpoint] = []
        for url in urls:
            e_scheme, e_host, e_root = normalize_endpoint(url)
            if (e_scheme, e_host, e_root) == (scheme, host, root):
                default = Endpoint(scheme, host, root, rewrites, self.config_for(host), default=True)
                continue
            endpoint = Endpoint(e_scheme, e_host, e_root, rewrites, self.config_for(e_host))
            if endpoint not in out:
                out.append(endpoint)
        # The default endpoint gets no rewrites, "always tried as a last resort".
        return [*out, Endpoint(default.scheme, default.host, default.api_root, (), default.config, default=True)]

    def pulls(self, ref: ImageRef) -> list[Pull]:
        """The requests containerd makes for `ref`, in order, rewrites applied."""
        reference = ref.digest or ref.tag or "latest"
        return [Pull(e, rewrite(ref.repository, e.rewrites), reference) for e in self.endpoints(ref.registry)]


def rewrite(repository: str, rules: tuple[tuple[str, str], ...]) -> str:
    matching = [(p, t) for p, t in rules if re.search(p, repository)]
    if len(matching) > 1:
        raise RegistriesError(
            f"{repository}: matched by {[p for p, _ in matching]}; RKE2/K3s apply rewrites in no fixed order"
        )
    if not matching:
        return repository
    pattern, template = matching[0]
    return re.sub(pattern, lambda m: go_expand(template, m), repository)


def load(text: str) -> Registries:
    """Parse and check a registries.yaml; raise RegistriesError naming the key that is wrong."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RegistriesError(f"not YAML: {exc}") from None
    doc = _keys("registries.yaml", doc, TOP_KEYS)
    mirrors: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
    for registry, raw_entry in _mapping("mirrors", doc.get("mirrors")).items():
        where = f"mirrors.{registry}"
        entry = _keys(where, raw_entry, MIRROR_KEYS)
        urls = entry.get("endpoint") or []
        if not isinstance(urls, list):
            raise RegistriesError(f"{where}.endpoint: a list of URLs is expected")
        for i, url in enumerate(urls):
            normalize_endpoint(_string(f"{where}.endpoint[{i}]", url))
        rules = entry.get("rewrite") or {}
        if not isinstance(rules, dict):
            raise RegistriesError(f"{where}.rewrite: a mapping of pattern: replacement is expected")
        for pattern, template in rules.items():
            _string(f"{where}.rewrite key", pattern)
            _string(f"{where}.rewrite.{pattern}", template)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RegistriesError(f"{where}.rewrite: {pattern!r} is not a regular expression: {exc}") from None
        mirrors[str(registry)] = (tuple(urls), tuple(rules.items()))
    configs: dict[str, dict[str, Any]] = {}
    for host, raw_config in _mapping("configs", doc.get("configs")).items():
        where = f"configs.{host}"
        config = _keys(where, raw_config or {}, CONFIG_KEYS)
        if "auth" in config:
            auth = _keys(f"{where}.auth", config["auth"], AUTH_KEYS)
            for key, value in auth.items():
                _string(f"{where}.auth.{key}", value)
        if "tls" in config:
            tls = _keys(f"{where}.tls", config["tls"], TLS_KEYS)
            for key in ("ca_file", "cert_file", "key_file"):
                if key in tls:
                    _string(f"{where}.tls.{key}", tls[key])
            if not isinstance(tls.get("insecure_skip_verify", False), bool):
                raise RegistriesError(f"{where}.tls.insecure_skip_verify: a boolean is expected")
        configs[str(host)] = config
    return Registries(mirrors, configs)
