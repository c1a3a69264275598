"""API errors as the apiserver reports them: a `Status` object whose reason and details clients switch on.

Client code (ours and kubectl's) branches on `reason` and `code`, and often prints `message`,
so these follow the apiserver's wording: `deployments.apps "api" not found`,
`Deployment.apps "api" is invalid: spec.selector: Required value`.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """Raised anywhere in the sandbox; the server turns it into a Status reply."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(group: str, plural: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404, f'{qualified(group, plural)} "{name}" not found', details=_details(group, plural, name)
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'{qualified(group, plural)} "{name}" already exists',
        "AlreadyExists",
        _details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str, why: str = "") -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": {why}',
        "Conflict",
        _details(group, plural, name),
    )


def forbidden(group: str, plural: str, name: str, verb: str, namespace: str, user: str) -> ApiError:
    subject = f'{qualified(group, plural)} "{name}"' if name else qualified(group, plural)
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    resource = plural.split("/")[0]
    sub = f"/{plural.split('/')[1]}" if "/" in plural else ""
    return ApiError(
        403,
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}{sub}" '
        f'in API group "{group}"{where}',
        details=_details(group, resource, name) if name else {"group": group, "kind": resource},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


class FieldError:
    """One entry of an Invalid error: `spec.replicas: Invalid value: -1: must be ...`."""

    def __init__(self, field: str, reason: str, text: str) -> None:
        self.field = field
        self.reason = reason
        self.text = text

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        return cls(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))

    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        return cls(field, "FieldValueInvalid", f"Invalid value: {_go_repr(value)}: {detail}")

    @classmethod
    def not_supported(cls, field: str, value: Any, supported: list[str]) -> FieldError:
        choices = ", ".join(f'"{s}"' for s in supported)
        return cls(
            field,
            "FieldValueNotSupported",
            f"Unsupported value: {_go_repr(value)}: supported values: {choices}",
        )

    @classmethod
    def forbidden(cls, field: str, detail: str) -> FieldError:
        return cls(field, "FieldValueForbidden", f"Forbidden: {detail}")


def _go_repr(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f'"{k}":{_go_repr(v)}' for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    if value is None:
        return "null"
    return str(value)


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    texts = [f"{e.field}: {e.text}" for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": e.reason, "message": e.text, "field": e.field} for e in errors]
    return ApiError(422, f'{qualified_kind} "{name}" is invalid: {joined}', "Invalid", details)


def status_for(code: int, message: str = "", details: dict[str, Any] | None = None) -> ApiError:
    """A Status for an injected failure, worded like the apiserver's own for that code."""
    defaults = {
        401: "Unauthorized",
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: injected by the sandbox",
        503: "The server is currently unable to handle the request",
        504: "Timeout: request did not complete within the allotted timeout",
    }
    text = message or defaults.get(code) or f"injected {code}"
    headers = {"Retry-After": "1"} if code in (429, 503) else {}
    if code == 429:
        details = {**(details or {}), "retryAfterSeconds": 1}
    return ApiError(code, text, details=details, headers=headers)
