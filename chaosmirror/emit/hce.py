"""HCE's Image Registry setting, three ways: a Terraform resource, the GraphQL request body, and plain
YAML for people who type it into the UI. Field names are those of `harness_chaos_image_registry`
(terraform-provider-harness) and of `createImageRegistry` (harness-go-sdk, chaos/api_image_registry.go).

HCE composes `<server>/<account>/<image-name>:<tag>`, which is where chaosmirror puts every image, so
custom images are only needed to pin digests: with them, the DDCR images are the exact ones mirrored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chaosmirror.emit.model import ConfigRequest, Rendered
from chaosmirror.emit.syntax import comment, hcl_str, yaml_str
from chaosmirror.ref import ImageRef

TERRAFORM_FILE = "hce/image-registry.tf"
GRAPHQL_FILE = "hce/image-registry.graphql.json"
UI_FILE = "hce/image-registry.yaml"

RESOURCE = "harness_chaos_image_registry"
RESOURCE_NAME = "chaosmirror"
GRAPHQL_URL = "https://app.harness.io/gateway/chaos/manager/api/query"
ACCOUNT_PLACEHOLDER = "<HARNESS_ACCOUNT_ID>"

# (GraphQL field, Terraform field, DDCR component). Both ddcrLib and ddcrFault run chaos-ddcr-faults,
# as Harness's own provider tests and SDK example set them.
CUSTOM_IMAGES = (
    ("logWatcher", "log_watcher", "log-watcher"),
    ("ddcr", "ddcr", "ddcr"),
    ("ddcrLib", "ddcr_lib", "ddcr-faults"),
    ("ddcrFault", "ddcr_fault", "ddcr-faults"),
)

_QUERY = """\
mutation CreateImageRegistry($identifiers: ScopedIdentifiersRequest!, $request: ImageRegistryRequest!) {
  createImageRegistry(identifiers: $identifiers, request: $request) {
    identifier { accountIdentifier orgIdentifier projectIdentifier }
    infraID
    registryServer
    registryAccount
    isPrivate
    secretName
    isDefault
    isOverrideAllowed
    useCustomImages
    customImages { logWatcher ddcr ddcrLib ddcrFault }
  }
}"""


@dataclass(frozen=True)
class CustomImage:
    api_field: str
    tf_field: str
    ref: ImageRef


@dataclass(frozen=True, kw_only=True)
class Settings:
    """HCE's image-registry setting for a request, independent of how it is written down."""

    server: str
    account: str
    is_private: bool
    secret_name: str
    is_default: bool
    is_override_allowed: bool
    custom_images: tuple[CustomImage, ...] = ()

    @property
    def use_custom_images(self) -> bool:
        return bool(self.custom_images)


def custom_images(req: ConfigRequest) -> tuple[CustomImage, ...]:
    """Pinned DDCR images, when digests are pinned and the release lists all three DDCR components."""
    if not req.pinned:
        return ()
    found = {c: req.component("ddcr", c) for _, _, c in CUSTOM_IMAGES}
    if any(image is None for image in found.values()):
        return ()
    return tuple(
        CustomImage(api, tf, req.mirrored(image.ref)) for api, tf, c in CUSTOM_IMAGES if (image := found[c]) is not None
    )


def settings(req: ConfigRequest) -> Settings:
    return Settings(
        server=req.target.server,
        account=req.target.account,
        is_private=req.private,
        secret_name=req.secret_name,
        is_default=req.default,
        is_override_allowed=req.allow_overrides,
        custom_images=custom_images(req),
    )


def _header(req: ConfigRequest, marker: str = "#") -> str:
    return comment(
        f"HCE image registry for release {req.release.name}: images are at "
        f"{req.target}/<image-name>:<tag> ({req.scope.level} scope).\n"
        "Written by chaosmirror; NEXT-STEPS.md says how to apply it.",
        marker=marker,
    )


def _hcl_bool(value: bool) -> str:
    return "true" if value else "false"


def _hcl_block(attributes: list[tuple[str, str]], indent: str) -> list[str]:
    """`key = value` lines with the `=` aligned, as `terraform fmt` writes them."""
    width = max(len(k) for k, _ in attributes)
    return [f"{indent}{k.ljust(width)} = {v}" for k, v in attributes]


def terraform(req: ConfigRequest) -> Rendered:
    """A `harness_chaos_image_registry` resource (the provider's account is the Harness account)."""
    s = settings(req)
    scope = req.scope
    attributes: list[tuple[str, str]] = []
    for key, value in (("org_id", scope.org), ("project_id", scope.project), ("infra_id", scope.infra)):
        if value:
            attributes.append((key, hcl_str(value)))
    attributes += [
        ("registry_server", hcl_str(s.server)),
        ("registry_account", hcl_str(s.account)),
        ("is_private", _hcl_bool(s.is_private)),
    ]
    if s.is_private:
        attributes.append(("secret_name", hcl_str(s.secret_name)))
    attributes += [
        ("is_default", _hcl_bool(s.is_default)),
        ("is_override_allowed", _hcl_bool(s.is_override_allowed)),
        ("use_custom_images", _hcl_bool(s.use_custom_images)),
    ]
    lines = [f'resource "{RESOURCE}" "{RESOURCE_NAME}" {{', *_hcl_block(attributes, "  ")]
    if s.custom_images:
        lines += ["", "  custom_images {"]
        lines += _hcl_block([(c.tf_field, hcl_str(str(c.ref))) for c in s.custom_images], "    ")
        lines.append("  }")
    lines.append("}")
    return Rendered(TERRAFORM_FILE, _header(req) + "\n".join(lines) + "\n")


def graphql_body(req: ConfigRequest) -> dict[str, object]:
    """The JSON body of a `createImageRegistry` call to HCE's GraphQL API."""
    s = settings(req)
    identifiers: dict[str, str] = {"accountIdentifier": ACCOUNT_PLACEHOLDER}
    if req.scope.org:
        identifiers["orgIdentifier"] = req.scope.org
    if req.scope.project:
        identifiers["projectIdentifier"] = req.scope.project
    request: dict[str, object] = {"registryServer": s.server, "registryAccount": s.account}
    if req.scope.infra:
        request["infraID"] = req.scope.infra
    request["isPrivate"] = s.is_private
    if s.is_private:
        request["secretName"] = s.secret_name
    request |= {
        "isDefault": s.is_default,
        "isOverrideAllowed": s.is_override_allowed,
        "useCustomImages": s.use_custom_images,
    }
    if s.custom_images:
        request["customImages"] = {c.api_field: str(c.ref) for c in s.custom_images}
    return {
        "operationName": "CreateImageRegistry",
        "query": _QUERY,
        "variables": {"identifiers": identifiers, "request": request},
    }


def graphql(req: ConfigRequest) -> Rendered:
    return Rendered(GRAPHQL_FILE, json.dumps(graphql_body(req), indent=2) + "\n")


def where_in_ui(req: ConfigRequest) -> str:
    """Where the setting is in HCE's UI, for the scope of the request."""
    scope = req.scope
    if scope.infra:
        return (
            f"Environments > Infrastructure > {scope.infra} > Edit > Image Registry "
            f"(project {scope.project!r} of organization {scope.org!r})"
        )
    if scope.project:
        return f"Project Settings > Image Registry (For Chaos), project {scope.project!r} of organization {scope.org!r}"
    if scope.org:
        return f"Organization Settings > Image Registry (For Chaos), organization {scope.org!r}"
    return "Account Settings > Image Registry (For Chaos)"


def ui_yaml(req: ConfigRequest) -> Rendered:
    """The same setting as plain YAML, each field with the name the UI gives it."""
    s = settings(req)
    rows: list[tuple[str, str, str]] = [("scope", yaml_str(req.scope.level), "")]
    for key, value in (
        ("organization", req.scope.org),
        ("project", req.scope.project),
        ("infrastructure", req.scope.infra),
    ):
        if value:
            rows.append((key, yaml_str(value), ""))
    rows += [
        ("server", yaml_str(s.server), 'UI: "Server" / "Custom image registry server"'),
        ("account", yaml_str(s.account), 'UI: "Account name" / "Custom image registry account"'),
        ("registryType", "private" if s.is_private else "public", 'UI: "Registry type": Public or Private'),
    ]
    if s.is_private:
        rows.append(("secretName", yaml_str(s.secret_name), 'UI: "Secret name", the Kubernetes pull secret'))
    rows += [
        ("allowOverrides", _hcl_bool(s.is_override_allowed), 'UI: "Allow Overrides" (lower scopes may change it)'),
        ("isDefault", _hcl_bool(s.is_default), ""),
        ("useCustomImages", _hcl_bool(s.use_custom_images), 'UI: "Use custom images"'),
    ]
    width = max(len(f"{k}: {v}") for k, v, _ in rows) + 2
    lines = [f"{f'{k}: {v}'.ljust(width)}# {note}" if note else f"{k}: {v}" for k, v, note in rows]
    if s.custom_images:
        lines.append("customImages:")
        lines += [f"  {c.api_field}: {yaml_str(str(c.ref))}" for c in s.custom_images]
    head = _header(req) + comment(f"Where: {where_in_ui(req)}.")
    return Rendered(UI_FILE, head + "\n".join(lines) + "\n")


def render(req: ConfigRequest) -> list[Rendered]:
    return [terraform(req), graphql(req), ui_yaml(req)]
