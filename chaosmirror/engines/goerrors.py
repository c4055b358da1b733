"""What the Go container tools (skopeo, the Docker daemon) say when a transfer fails, as a `Kind`.

Their messages are built from parts in fixed forms: an HTTP status line ("503 Service
Unavailable", "503 (Service Unavailable)"), a registry error code ("toomanyrequests: ..."), a Go
network error ("connection reset by peer"). Each is matched in that form, so text elsewhere in a
message (a path, a digest, a temporary name) cannot match.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from chaosmirror.errors import Kind

_STATUS_KINDS: dict[int, Kind] = {
    401: "auth", 403: "denied", 404: "not-found", 408: "server", 429: "rate-limited",
    500: "server", 502: "server", 503: "server", 504: "server",
}  # fmt: skip
_STATUS = {code: re.compile(rf"\b{code} \(?{re.escape(HTTPStatus(code).phrase)}\b") for code in _STATUS_KINDS}
_RESET = (
    r"\b(?:connection reset by peer|broken pipe|use of closed network connection|server closed idle connection|"
    r"network is unreachable)\b"
)
_CODES: list[tuple[re.Pattern[str], Kind]] = [
    (re.compile(r"\btoomanyrequests:"), "rate-limited"),
    (re.compile(r"\b(?:manifest unknown|name unknown|blob unknown)\b"), "not-found"),
    (re.compile(r"\b(?:unauthorized|authentication required):"), "auth"),
    (re.compile(r"\bdenied:"), "denied"),
    (re.compile(r"\bunavailable:"), "server"),
    (re.compile(r"\bx509: "), "tls"),
    (re.compile(r"\bno space left on device\b"), "local"),
    (re.compile(r"\bpermission denied\b"), "local"),
    (re.compile(r"\bconnection refused\b"), "refused"),
    (re.compile(r"\b(?:no such host|server misbehaving)\b"), "dns"),
    (re.compile(r"\b(?:i/o timeout|TLS handshake timeout|context deadline exceeded)\b"), "timeout"),
    (re.compile(_RESET), "reset"),
    (re.compile(r"\bunexpected EOF\b|: EOF$"), "truncated"),
    # containers/image tries other manifest formats when the target refuses a manifest PUT; with
    # --preserve-digests it cannot, and this replaces the refusal: a broken PUT reads the same way.
    (re.compile(r"\bmust be converted to type \S+ to be written to destination\b"), "server"),
]


def classify_message(message: str) -> Kind:
    """The kind of failure a Go container tool's error message reports (see the patterns above)."""
    for code, pattern in _STATUS.items():
        if pattern.search(message):
            return _STATUS_KINDS[code]
    for pattern, found in _CODES:
        if pattern.search(message):
            return found
    return "protocol"
