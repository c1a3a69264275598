"""Jinja2's immutable sandbox with strict undefined: templates can read facts, nothing else.

Runbook templates (`"{{ ... }}"` strings anywhere in `with:`, messages) and conditions
(bare expressions such as `facts.health.value.status != "ok"`) are evaluated here. The
sandbox refuses attribute access to internals, there are no globals that reach files or
the network, and an undefined name is an error instead of an empty string.

`references` reads a template's syntax tree (never its text) for the names it uses: the
loader checks `vars.<name>` references with it and the engine orders the vars by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from remedium.errors import TemplateError

__all__ = [
    "References",
    "TemplateError",
    "Vars",
    "check_condition",
    "check_template",
    "evaluate",
    "is_template",
    "parse",
    "references",
    "render",
    "render_value",
]


class Vars:
    """A runbook's rendered `vars` as templates see them: `vars.<name>` or `vars["<name>"]`.

    Not a dict, so that a var may be called `items` or `keys` (and var names cannot start
    with `_`, which the sandbox keeps from templates). A var without a value (its
    template failed) makes the template using it fail with the var's own error when it is
    known here, like any other template error.
    """

    __slots__ = ("_errors", "_values")

    def __init__(
        self, values: Mapping[str, Any] | None = None, errors: Mapping[str, str] | None = None
    ) -> None:
        self._values = dict(values or {})
        self._errors = dict(errors or {})

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        return f"Vars({self._values!r})"

    def _why_missing(self, name: str) -> str:
        """Why `vars.<name>` has no value (underscored: templates cannot reach it)."""
        if name in self._errors:
            return f"vars.{name} could not be rendered: {self._errors[name]}"
        return f"vars.{name} has no value here (it failed to render, or was not passed to this stage)"


class _Undefined(StrictUndefined):
    """StrictUndefined that says why a var is missing instead of "'Vars' has no attribute"."""

    @property
    def _undefined_message(self) -> str:
        if isinstance(self._undefined_obj, Vars) and isinstance(self._undefined_name, str):
            return self._undefined_obj._why_missing(self._undefined_name)
        return super()._undefined_message

    def describe(self) -> str:
        return self._undefined_message


_ENV = ImmutableSandboxedEnvironment(undefined=_Undefined, autoescape=False)
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
    if isinstance(result, _Undefined):
        raise TemplateError(f"{result.describe()} in {expression!r}")
    if isinstance(result, StrictUndefined):
        raise TemplateError(f"undefined value in {expression!r}")
    return result


def parse(source: str, *, condition: bool) -> nodes.Template:
    """The syntax tree of a template, or of a condition (as the body of a `{{ }}`)."""
    try:
        if not condition:
            return _ENV.parse(source)
        parser = Parser(_ENV, source, state="variable")
        expression = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    except TemplateSyntaxError as exc:
        kind = "condition" if condition else "template"
        raise TemplateError(f"{kind} syntax error: {exc.message}") from None
    tree = nodes.Template([nodes.Output([expression], lineno=1)], lineno=1)
    tree.set_environment(_ENV)
    return tree


@dataclass
class References:
    """What one template or condition reads from its context."""

    names: dict[str, int] = field(default_factory=dict)  # alert, facts, vars, outcome... -> first line
    vars: dict[str, int] = field(default_factory=dict)  # `vars.<name>` -> line of its first use
    whole_vars: list[int] = field(default_factory=list)  # lines using `vars` other than `vars.<name>`


def references(source: str, *, condition: bool) -> References:
    """Names and `vars.<name>` a template uses, from its syntax tree; TemplateError if it does not parse."""
    tree = parse(source, condition=condition)
    loads = [node for node in tree.find_all(nodes.Name) if node.ctx == "load"]
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError:  # e.g. an unknown filter: it fails when rendered; names are a best effort
        undeclared = {node.name for node in loads} - set(_ENV.globals)
    refs = References()
    for node in loads:
        if node.name in undeclared:
            refs.names.setdefault(node.name, node.lineno)
    if "vars" in refs.names:  # else `vars` is the template's own (a loop or set variable)
        _find_vars(tree, refs)
    return refs


def _find_vars(node: nodes.Node, refs: References) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem) and _is_vars(node.node):
        name = node.attr if isinstance(node, nodes.Getattr) else _constant_key(node.arg)
        if name is not None:
            refs.vars.setdefault(name, node.lineno)
            return
    if _is_vars(node):
        refs.whole_vars.append(node.lineno)
    for child in node.iter_child_nodes():
        _find_vars(child, refs)


def _is_vars(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "vars" and node.ctx == "load"


def _constant_key(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None
