"""Jinja2's immutable sandbox with strict undefined: templates can read facts, nothing else.

Runbook templates (`"{{ ... }}"` strings anywhere in `with:`, messages) and conditions
(bare expressions such as `facts.health.value.status != "ok"`) are evaluated here. The
sandbox refuses attribute access to internals, there are no globals that reach files or
the network, and an undefined name is an error instead of an empty string.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "TemplateError",
    "check_condition",
    "check_template",
    "evaluate",
    "is_template",
    "render",
    "render_value",
]


class TemplateError(Exception):
    """A template or condition that cannot be compiled or evaluated."""


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_ENV.globals.clear()
_ENV.globals.update({"range": range, "dict": dict})


def _regex(value: Any, pattern: str, group: int | str = 1) -> str:
    """`{{ alert.title | regex("job '(?P<job>[^']+)'", "job") }}`: a group of the first match, or an error."""
    import re

    found = re.search(pattern, str(value))
    if found is None:
        raise ValueError(f"{pattern!r} does not match {str(value)!r}")
    return found.group(group) or ""


_ENV.filters["regex"] = _regex


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_template(source: str) -> None:
    try:
        _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None


def check_condition(source: str) -> None:
    try:
        _ENV.compile_expression(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"condition syntax error: {exc.message}") from None


def render(source: str, context: dict[str, Any]) -> str:
    try:
        return _ENV.from_string(source).render(context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    except (UndefinedError, SecurityError) as exc:
        raise TemplateError(f"{exc} in template {source!r}") from None
    except Exception as exc:  # a filter raising on bad input, division by zero...
        raise TemplateError(f"{type(exc).__name__}: {exc} in template {source!r}") from None


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside a nested structure; a lone `{{ x }}` keeps x's type."""
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if not is_template(value):
        return value
    stripped = value.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return evaluate(stripped[2:-2], context)
    return render(value, context)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    try:
        compiled = _ENV.compile_expression(expression, undefined_to_none=False)
        result = compiled(**context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"condition syntax error: {exc.message}") from None
    except (UndefinedError, SecurityError) as exc:
        raise TemplateError(f"{exc} in {expression!r}") from None
    except Exception as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc} in {expression!r}") from None
    if isinstance(result, StrictUndefined):
        raise TemplateError(f"undefined value in {expression!r}")
    return result
