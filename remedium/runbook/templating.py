"""Jinja2's immutable sandbox with strict undefined: templates can read facts, nothing else.

Runbook templates (`"{{ ... }}"` strings anywhere in `with:`, messages) and conditions
(bare expressions such as `facts.health.value.status != "ok"`) are evaluated here. The
sandbox refuses attribute access to internals, there are no globals that reach files or
the network, and an undefined name is an error instead of an empty string.

`references` reads a template's syntax tree (never its text) for the names it uses: the
loader checks `vars.<name>` references with it and the engine orders the vars by it.

No template or condition can hold the worker: every render and evaluation runs under the
bounds of `template_limits` (time, memory, the size of everything it builds), enforced by this
environment (intercepted `*`, `**`, `+`, `%`, its calls, filters, `~`, literals and output)
and by `template_limits.bounded`. `constant_violations` applies the same checks to the constant
parts of a template for `remedium runbook validate`. Callers on an event loop run these
functions in a thread (`asyncio.to_thread`): the bounds keep that thread short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, update_wrapper
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import _PassArg
from markupsafe import EscapeFormatter, Markup

from remedium.errors import TemplateError
from remedium.runbook.template_limits import (
    MAX_TEXT,
    MAX_WEIGHT,
    BoundExceeded,
    LimitExceeded,
    bounded,
    check_binop,
    check_call,
    check_format_field,
    check_value,
    checkpoint,
    concat_values,
    join_text,
    limited_filter,
    limited_range,
)

__all__ = [
    "References",
    "TemplateError",
    "Vars",
    "check_condition",
    "check_template",
    "constant_violations",
    "error_line",
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


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with `~` and list, tuple and dict literals measured as they are built.

    `~` would otherwise call the runtime's `str_join` and a literal would be plain Python:
    `[s, s, s]` nested ten deep, or `a ~ a` ten times over, would grow without any check.
    """

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.limited_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._measured(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: `{% for k, v in ... %}`
            super().visit_Tuple(node, frame)
            return
        self._measured(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._measured(super().visit_Dict, node, frame)

    def _measured(self, visit: Callable[[Any, Frame], None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.limited_literal(")
        visit(node, frame)
        self.write(")")


class _Formatter(SandboxedFormatter):
    """`str.format` in the sandbox, each field's width and the whole result within MAX_TEXT."""

    _size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._size += check_format_field(value, format_spec)
        if self._size > MAX_TEXT:
            raise LimitExceeded(f"format() result would be over the limit of {MAX_TEXT} characters")
        return super().format_field(value, format_spec)


class _EscapeFormatter(_Formatter, EscapeFormatter):
    pass


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the size limits of `template_limits` on everything a template builds.

    Intercepted operators are also never folded at compile time (Jinja leaves them to run
    time), so compiling `10 ** (10 ** 9)` costs nothing; filters folded at compile time
    run their own checks, and one that refuses leaves the call to run time.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(join_text)  # the output, `{% set %}` blocks, macros and filter blocks

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        args = check_call(obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        name = getattr(obj, "__name__", type(obj).__name__)
        return check_value(result, f"the result of {name}()", MAX_WEIGHT)

    def limited_concat(self, values: tuple[Any, ...]) -> str:
        return concat_values(values)

    def limited_literal(self, value: Any) -> Any:
        return check_value(value, "a literal")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own (`format` and `format_map` through the sandbox), with `_Formatter`."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text: str = value.__self__
        formatter = (
            _EscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else _Formatter(self)
        )
        format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(wrapper, value)


_ENV = _Sandbox(undefined=_Undefined, autoescape=False)
_ENV.globals.clear()
_ENV.globals.update({"range": limited_range, "dict": dict})


def _regex(value: Any, pattern: str, group: int | str = 1) -> str:
    """`{{ alert.title | regex("job '(?P<job>[^']+)'", "job") }}`: a group of the first match, or an error."""
    import re

    found = re.search(pattern, str(value))
    if found is None:
        raise ValueError(f"{pattern!r} does not match {str(value)!r}")
    return found.group(group) or ""


_ENV.filters["regex"] = _regex
_ENV.filters.update({name: limited_filter(name, function) for name, function in _ENV.filters.items()})


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_template(source: str) -> None:
    try:
        _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None


def check_condition(source: str) -> None:
    try:
        bounded("condition", _expression, source, False)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"condition syntax error: {exc.message}") from None
    except (LimitExceeded, BoundExceeded) as exc:
        raise TemplateError(f"condition would exceed a limit: {exc}") from None


@lru_cache(maxsize=1024)
def _template(source: str) -> Template:
    """A compiled template, kept: the worker renders the same runbook templates incident after incident."""
    return _ENV.from_string(source)


@lru_cache(maxsize=1024)
def _expression(source: str, undefined_to_none: bool) -> TemplateExpression:
    return _ENV.compile_expression(source, undefined_to_none=undefined_to_none)


def _render(source: str, context: dict[str, Any]) -> str:
    template = _template(source)
    checkpoint()
    return template.render(context)


def render(source: str, context: dict[str, Any]) -> str:
    """The template's text; TemplateError when it fails or goes over a limit (`template_limits`)."""
    try:
        return bounded("template", _render, source, context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    except (UndefinedError, SecurityError, LimitExceeded, BoundExceeded) as exc:
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
        return _evaluate(stripped[2:-2], context, "template")
    return render(value, context)


def _run(expression: str, context: dict[str, Any]) -> Any:
    compiled = _expression(expression, False)
    checkpoint()
    return compiled(**context)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """A condition's value; TemplateError when it fails or goes over a limit (`template_limits`)."""
    return _evaluate(expression, context, "condition")


def _evaluate(expression: str, context: dict[str, Any], what: str) -> Any:
    try:
        result = bounded(what, _run, expression, context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"condition syntax error: {exc.message}") from None
    except (UndefinedError, SecurityError, LimitExceeded, BoundExceeded) as exc:
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


def fact_ids(source: str, *, condition: bool) -> list[str]:
    """The diagnostics (`facts.<id>`, `facts['<id>']`) a template reads, in order of first use.

    From the syntax tree, so that a condition that fails because a fact it reads failed can say
    which diagnostic failed; [] when it does not parse or reads no fact by a constant name.
    """
    try:
        tree = parse(source, condition=condition)
        if "facts" not in references(source, condition=condition).names:
            return []  # `facts` is the template's own (a loop or set variable), or unused
    except TemplateError:
        return []
    found: dict[str, None] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        inner = node.node
        if isinstance(inner, nodes.Name) and inner.name == "facts" and inner.ctx == "load":
            key = node.attr if isinstance(node, nodes.Getattr) else _constant_key(node.arg)
            if key is not None:
                found.setdefault(key, None)
    return list(found)


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


def error_line(source: str, *, condition: bool) -> int | None:
    """The line (inside the template) of its syntax error, or None when it has none.

    Compiled in this sandbox, never in a plain Environment, whose constant folding would
    compute `10 ** (10 ** 9)` while looking for the error.
    """
    try:
        if condition:
            _ENV.compile_expression(source)
        else:
            _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return exc.lineno or 1
    return None


# --- constant analysis, for `remedium runbook validate` ---------------------------------------

_UNKNOWN: Any = object()  # a value known only at run time
_CALLABLE_GLOBALS: dict[str, Callable[..., Any]] = {"range": limited_range, "dict": dict}


def constant_violations(source: str, *, condition: bool) -> list[tuple[int, str]]:
    """(line in the template, message) for each limit its constant parts already go over.

    `range(10**12)`, `'a' * 5*10**8`, `10 ** (10 ** 9)`, `'x'.center(10**9)` or `|indent(10**9)`
    are known to fail before any incident, wherever they stand (in an `{% if %}` never taken,
    in a loop): the syntax tree is folded bottom-up with the checks the run time applies, so
    both say the same thing. Nothing the template reads from its context is guessed: a limit
    reached only through alert or facts data, or by running (nested loops), is the run
    time's to refuse. The folding itself runs under the same bounds as a render.
    TemplateError when the template does not parse (the syntax check reports that).
    """
    tree = parse(source, condition=condition)
    folder = _Folder()
    try:
        bounded("condition" if condition else "template", folder.fold, tree)
    except BoundExceeded as exc:
        folder.found.append((1, f"{exc} while being checked"))
    return folder.found


class _Folder:
    """Folds the constant parts of a syntax tree, recording each limit one goes over at its line."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self._eval_ctx = EvalContext(_ENV)

    def fold(self, node: nodes.Node) -> Any:
        try:
            return self._fold(node)
        except LimitExceeded as exc:
            self.found.append((node.lineno, str(exc)))
            return _UNKNOWN

    def _all(self, found: list[Any]) -> bool:
        return all(value is not _UNKNOWN for value in found)

    def _fold(self, node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.BinExpr):
            left, right = self.fold(node.left), self.fold(node.right)
            if not self._all([left, right]) or node.operator not in _ENV.binop_table:
                return _UNKNOWN
            check_binop(node.operator, left, right)
            return _computed(_ENV.binop_table[node.operator], left, right)
        if isinstance(node, nodes.UnaryExpr):
            operand = self.fold(node.node)
            if operand is _UNKNOWN or node.operator not in _ENV.unop_table:
                return _UNKNOWN
            return _computed(_ENV.unop_table[node.operator], operand)
        if isinstance(node, nodes.Concat):
            parts = [self.fold(child) for child in node.nodes]
            return concat_values(tuple(parts)) if self._all(parts) else _UNKNOWN
        if isinstance(node, nodes.List) or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
            items = [self.fold(child) for child in node.items]
            if not self._all(items):
                return _UNKNOWN
            return check_value(items if isinstance(node, nodes.List) else tuple(items), "a literal")
        if isinstance(node, nodes.Dict):
            pairs = [(self.fold(pair.key), self.fold(pair.value)) for pair in node.items]
            if not self._all([part for pair in pairs for part in pair]):
                return _UNKNOWN
            return check_value(_computed(dict, pairs), "a literal")
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            return self._item(node)
        if isinstance(node, nodes.Slice):
            ends = (node.start, node.stop, node.step)
            bounds = [None if end is None else self.fold(end) for end in ends]
            return slice(*bounds) if self._all(bounds) else _UNKNOWN
        if isinstance(node, nodes.Call):
            return self._call(node)
        if isinstance(node, nodes.Filter):
            return self._filter(node)
        for child in node.iter_child_nodes():
            self.fold(child)
        return _UNKNOWN

    def _item(self, node: nodes.Getattr | nodes.Getitem) -> Any:
        obj = self.fold(node.node)
        key = node.attr if isinstance(node, nodes.Getattr) else self.fold(node.arg)
        if not self._all([obj, key]) or node.ctx != "load":
            return _UNKNOWN
        get = _ENV.getattr if isinstance(node, nodes.Getattr) else _ENV.getitem
        value = _computed(get, obj, key)
        return _UNKNOWN if isinstance(value, Undefined) else value

    def _arguments(self, node: nodes.Call | nodes.Filter) -> tuple[list[Any], dict[str, Any]] | None:
        args = [self.fold(arg) for arg in node.args]
        kwargs = {str(keyword.key): self.fold(keyword.value) for keyword in node.kwargs}
        dynamic = [self.fold(extra) for extra in (node.dyn_args, node.dyn_kwargs) if extra is not None]
        if dynamic or not self._all([*args, *kwargs.values()]):
            return None
        return args, kwargs

    def _call(self, node: nodes.Call) -> Any:
        if isinstance(node.node, nodes.Name):
            function = _CALLABLE_GLOBALS.get(node.node.name, _UNKNOWN)
        else:
            function = self.fold(node.node)
        arguments = self._arguments(node)
        if function is _UNKNOWN or arguments is None:
            return _UNKNOWN
        args, kwargs = arguments
        if function not in _CALLABLE_GLOBALS.values() and not isinstance(
            getattr(function, "__self__", None), str | bytes | int
        ):
            return _UNKNOWN  # only the globals and methods of constants: nothing else is known now
        called = check_call(function, tuple(args), kwargs)
        name = getattr(function, "__name__", "call")
        return check_value(_computed(function, *called, **kwargs), f"the result of {name}()", MAX_WEIGHT)

    def _filter(self, node: nodes.Filter) -> Any:
        value = _UNKNOWN if node.node is None else self.fold(node.node)
        arguments = self._arguments(node)
        function = _ENV.filters.get(node.name)
        passes = getattr(function, "jinja_pass_arg", None)
        if value is _UNKNOWN or arguments is None or function is None or passes is _PassArg.context:
            return _UNKNOWN
        args, kwargs = arguments
        return _computed(_ENV.call_filter, node.name, value, args, kwargs, eval_ctx=self._eval_ctx)


def _computed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, or unknown when it fails for any reason but a limit."""
    try:
        return function(*args, **kwargs)
    except TemplateError:  # a limit, or the bound of the whole check
        raise
    except Exception:
        return _UNKNOWN
