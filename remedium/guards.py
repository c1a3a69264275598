"""Guardrail decisions as pure functions of the policy and a step's dry run.

Pure so the workflow can evaluate them deterministically, and so they are tested without
Temporal. The durable parts (rate-limit windows, the global freeze) live in their own
entity workflows; this module only decides what a policy says about one step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from pydantic import HttpUrl

from remedium.models import DryRun, Policy, RateLimit, RenderedStep, TargetScope
from remedium.names import limiter_workflow_id
from remedium.selectors import selector_matches


def blast_radius_refusal(policy: Policy, step: RenderedStep, dry: DryRun) -> str | None:
    """Why the policy forbids this step, or None when it is inside the blast radius."""
    radius = policy.blast_radius
    scope = dry.scope
    if scope is None:
        return None
    if scope.kind == HTTP_SCOPE:
        return _http_scope_refusal(policy, step, scope)
    if scope.namespace and not any(fnmatchcase(scope.namespace, ns) for ns in radius.namespaces):
        return (
            f"step {step.id} ({step.action}) would touch namespace {scope.namespace!r}, outside the "
            f"policy's blast radius (allowed: {', '.join(radius.namespaces) or 'none'})"
        )
    if radius.label_selector and scope.kind:
        if not selector_matches(radius.label_selector, scope.labels):
            return (
                f"step {step.id} ({step.action}) targets {scope.kind} {scope.key}, whose labels do not "
                f"match the policy's selector {radius.label_selector!r}"
            )
    if (
        radius.max_replicas_delta is not None
        and scope.replicas_before is not None
        and scope.replicas_after is not None
        and abs(scope.replicas_after - scope.replicas_before) > radius.max_replicas_delta
    ):
        return (
            f"step {step.id} would change {scope.key} from {scope.replicas_before} to "
            f"{scope.replicas_after} replicas, more than the policy's max_replicas_delta of "
            f"{radius.max_replicas_delta}"
        )
    return None


def approval_forced(policy: Policy, step: RenderedStep) -> str | None:
    """Why the policy makes this step wait for a human regardless of its risk, or None."""
    if not step.state_changing:
        return None
    if policy.autonomy == "approve_all":
        return "policy autonomy is approve_all"
    for pattern in policy.blast_radius.always_approve:
        if fnmatchcase(step.action, pattern):
            return f"policy always asks before {step.action}"
    return None


def rate_limit_for(policy: Policy, action: str, target: str) -> RateLimit | None:
    """The strictest rate limit that applies to this action on this target."""
    matching = [
        limit
        for limit in policy.rate_limits
        if fnmatchcase(action, limit.action) and fnmatchcase(target, limit.target)
    ]
    if not matching:
        return None
    return min(matching, key=lambda limit: limit.max / limit.per.total_seconds())


def limiter_id(action: str, target: str) -> str:
    """One limiter workflow per (action, target): a readable, stable workflow id."""
    return limiter_workflow_id(action, target)


# ------------------------------------------------------------------ outbound HTTP

HTTP_SCOPE = "http"  # TargetScope.kind of an http.request step
REFUSED = "refused by policy http.allow"
# Names that mean "this machine" or "the cloud's metadata service": reached only when an allow
# entry names them, like the addresses below.
SPECIAL_NAMES = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data"}
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # 0.0.0.0 connects to this host on Linux
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlParts:
    """A URL as the WHATWG parser (pydantic's HttpUrl, the one params validate with) reads it.

    Compared component by component, so `http://good.example.com.evil.net` is host
    `good.example.com.evil.net` and `http://good@evil` is host `evil`: no string-prefix trick
    survives the parse.
    """

    scheme: str
    host: str  # lowercase, brackets and one trailing dot removed
    port: int
    path: str
    userinfo: bool

    @property
    def address(self) -> Address | None:
        """The host as an IP address when it is one (IPv4-mapped IPv6 unwrapped)."""
        try:
            return _unwrap(ipaddress.ip_address(self.host))
        except ValueError:
            return None


def url_parts(url: str) -> UrlParts | None:
    """The normalised parts of an http(s) URL, or None when it is not one."""
    try:
        parsed = HttpUrl(url)
    except ValueError:
        return None
    host = (parsed.host or "").lower().removeprefix("[").removesuffix("]").removesuffix(".")
    if not host or parsed.port is None:
        return None
    return UrlParts(
        scheme=parsed.scheme,
        host=host,
        port=parsed.port,
        path=parsed.path or "/",
        userinfo=bool(parsed.username or parsed.password),
    )


def _unwrap(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def special_address(address: Address) -> bool:
    """Loopback, link-local, unspecified or a cloud metadata address: never reached by accident."""
    address = _unwrap(address)
    if isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK:
        return True
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address in METADATA_ADDRESSES
    )


def special_name(host: str) -> bool:
    return host in SPECIAL_NAMES or host.endswith(".localhost")


def _path_within(path: str, prefix: str) -> bool:
    """`/api` covers `/api` and `/api/x`, never `/apix`; `/api/` covers what lies below it."""
    if path == prefix or prefix == "/":
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix + "/")


def _matches(entry: UrlParts, url: UrlParts) -> bool:
    return (
        entry.scheme == url.scheme
        and entry.host == url.host
        and entry.port == url.port
        and _path_within(url.path, entry.path)
    )


def _named(entries: list[UrlParts], url: UrlParts, address: Address) -> bool:
    """Whether an entry naming this address literally would allow the URL sent to it."""
    there = replace(url, host=str(address))
    return any(e.address == address and _matches(e, there) for e in entries)


def shown_url(url: str) -> str:
    """The URL as a refusal shows it: a password in it never reaches the audit trail."""
    try:
        parsed = HttpUrl(url)
    except ValueError:
        return url[:300]
    if parsed.username or parsed.password:
        text = str(parsed)
        scheme, _, rest = text.partition("://")
        return f"{scheme}://[redacted]@{rest.split('@', 1)[1]}"
    return str(parsed)


def outbound_refusal(allow: Sequence[str], url: str, resolved: Iterable[str] | None = None) -> str | None:
    """Why `http.allow` forbids a request to `url`, or None when an entry allows it.

    Pure, so the workflow decides it from a dry run and the activity again before sending.
    `resolved` are the addresses the URL's host resolved to (IP literals need none): one that
    is loopback, link-local or metadata refuses the URL unless an allow entry names it, so a
    name an attacker points at 127.0.0.1 reaches nothing.
    """
    shown = shown_url(url)
    parts = url_parts(url)
    if parts is None:
        return f"{REFUSED}: {shown} is not allowed (not an http or https URL)"
    if parts.userinfo:
        return f"{REFUSED}: {shown} is not allowed (credentials in a URL are never sent)"
    if not allow:
        return f"{REFUSED}: {shown} is not allowed (the policy allows no outbound HTTP)"
    entries = [e for e in (url_parts(entry) for entry in allow) if e is not None]
    entry = next((e for e in entries if _matches(e, parts)), None)
    if entry is None:
        return f"{REFUSED}: {shown} is not allowed (no allow entry covers it)"
    if special_name(entry.host) or entry.address is not None:
        return None  # the entry names this very host or address
    for text in resolved or ():
        try:
            address = _unwrap(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
        if special_address(address) and not _named(entries, parts, address):
            return (
                f"{REFUSED}: {shown} is not allowed ({parts.host} resolves to {address}, a loopback, "
                "link-local or metadata address that no allow entry names)"
            )
    return None


def _http_scope_refusal(policy: Policy, step: RenderedStep, scope: TargetScope) -> str | None:
    """An http.request step reaches only allowed URLs: its request and its undo, checked before approval."""
    for url in scope.urls or [scope.name]:
        parts = url_parts(url)
        resolved = scope.addresses.get(parts.host) if parts is not None else None
        refusal = outbound_refusal(policy.http.allow, url, resolved)
        if refusal is not None:
            return f"step {step.id} ({step.action}) {refusal}"
    return None
