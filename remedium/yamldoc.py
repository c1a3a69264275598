"""Load one YAML file into a pydantic model, reporting every problem as `path:line:col: message`.

Runbooks and the policy are written by hand, so a bad file must point at the exact key or
value at fault, in words, and list all problems in one go (fix-run-fix loops are slow).
The file is composed into YAML nodes (which keep their positions) and constructed from those
same nodes; each pydantic error `loc` is then walked back down the node tree. Extra checks
that need the validated model (unknown actions, template syntax...) get a `Locator` to report
on exact nodes too.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

__all__ = [
    "Check",
    "Document",
    "Finding",
    "Loc",
    "Locator",
    "Problem",
    "explain_errors",
    "format_loc",
    "load_model",
    "read_yaml",
    "validate_document",
]

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, at a 1-based line and column."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class Finding(NamedTuple):
    """A problem before it is tied to a file: what checks return."""

    line: int
    col: int
    message: str


class Locator:
    """Maps a pydantic-style `loc` (keys by alias, list indexes) to the YAML node it came from."""

    def __init__(self, root: yaml.Node | None, text: str = "") -> None:
        self.root = root
        self.lines = text.splitlines()

    def resolve(self, loc: Loc) -> tuple[yaml.Node | None, yaml.Node | None, int]:
        """(deepest node reached, its key node if it is a mapping value, segments matched)."""
        node, key_node, depth = self.root, None, 0
        for segment in loc:
            child = _child(node, segment)
            if child is None:
                break
            key_node, node = child
            depth += 1
        return node, key_node, depth

    def node(self, loc: Loc) -> yaml.Node | None:
        """The node at exactly `loc`, or None when the document does not spell it out."""
        node, _, depth = self.resolve(loc)
        return node if depth == len(loc) else None

    def __call__(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at `loc` (its key with key=True), else its nearest parent."""
        node, key_node, depth = self.resolve(loc)
        if key_node is not None and depth == len(loc) and (key or _is_blank(node)):
            return _position(key_node)
        return _position(node)

    def at(self, loc: Loc, message: str, *, key: bool = False) -> Finding:
        line, col = self(loc, key=key)
        return Finding(line, col, message)


Check = Callable[[M, Locator], Iterable[Finding]]


@dataclass(frozen=True)
class Document:
    """A composed YAML file: its nodes, the data built from them, and how to locate things in it."""

    path: str
    root: yaml.MappingNode
    data: dict[Any, Any]
    locate: Locator


def read_yaml(path: Path | str, display: str | None = None) -> tuple[Document | None, list[Problem]]:
    """Parse one file whose top level must be a mapping; problems include duplicate keys."""
    shown = display if display is not None else str(path)

    def problem(line: int, col: int, message: str) -> list[Problem]:
        return [Problem(shown, line, col, message)]

    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, problem(1, 1, "no such file or directory")
    except IsADirectoryError:
        return None, problem(1, 1, "is a directory, expected a YAML file")
    except OSError as exc:
        return None, problem(1, 1, f"cannot read file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(raw, exc.start)
        return None, problem(line, col, f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})")

    try:
        root, data = _compose_and_construct(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return None, problem(line, col, _syntax_message(exc))
    except yaml.reader.ReaderError as exc:
        line, col = _text_position(text, exc.position)
        return None, problem(line, col, f"YAML syntax error: unacceptable character #x{exc.character:04x}")
    except yaml.YAMLError as exc:
        return None, problem(1, 1, f"YAML syntax error: {exc}")

    if root is None:
        return None, problem(1, 1, "file is empty: expected a YAML mapping")
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        line, col = _position(root)
        return None, problem(line, col, f"top level must be a mapping, got {_node_kind(root)}")
    problems = [Problem(shown, *finding) for finding in _duplicate_keys(root)]
    return Document(shown, root, data, Locator(root, text)), problems


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    """One parse gives both the positioned nodes and the same data yaml.safe_load would."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def validate_document(
    doc: Document, model: type[M], checks: Sequence[Check[M]] = ()
) -> tuple[M | None, list[Problem]]:
    """Validate against `model`, then run `checks` on the result; every problem, in file order."""
    try:
        value = model.model_validate(doc.data)
    except ValidationError as exc:
        findings = explain_errors(exc, model, doc.locate)
        return None, _sorted(doc.path, findings)
    findings = [finding for check in checks for finding in check(value, doc.locate)]
    return value, _sorted(doc.path, findings)


def load_model(
    path: Path | str, model: type[M], checks: Sequence[Check[M]] = (), display: str | None = None
) -> tuple[M | None, list[Problem]]:
    """Read and validate one file; the model is returned only when there is no problem at all."""
    doc, problems = read_yaml(path, display)
    if doc is None:
        return None, problems
    value, more = validate_document(doc, model, checks)
    problems = sorted(problems + more, key=lambda p: (p.line, p.col))
    return (value if not problems else None), problems


def explain_errors(
    exc: ValidationError,
    model: type[BaseModel],
    locate: Locator,
    prefix: Loc = (),
    skip: Callable[[ErrorDetails], bool] | None = None,
) -> list[Finding]:
    """Turn pydantic errors into findings; `prefix` is where `model`'s data sits in the document."""
    findings = []
    for error in exc.errors(include_url=False):
        if skip is not None and skip(error):
            continue
        rel = tuple(error["loc"])
        loc = prefix + rel
        kind = error["type"]
        if rel and rel[-1] == "[key]":  # pydantic's marker for a mapping key that is invalid itself
            parent = loc[:-2]
            findings.append(
                locate.at(loc[:-1], f"{format_loc(parent)}: invalid name: {_describe_error(error)}", key=True)
            )
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(model, rel[:-1])
            listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
            findings.append(locate.at(loc, f"unknown key '{rel[-1]}'{listed}", key=True))
        elif kind == "missing":
            _, _, depth = locate.resolve(loc[:-1])
            line, col = locate(loc[:-1])
            missing = format_loc(loc[depth:])
            what = "section" if len(loc) == 1 else "key"
            findings.append(Finding(line, col, f"missing required {what} '{missing}'"))
        else:
            findings.append(locate.at(loc, f"{format_loc(loc)}: {_describe_error(error)}"))
    return findings


def format_loc(loc: Loc) -> str:
    """('plan', 1, 'with', 'url') -> 'plan[1].with.url'."""
    text = ""
    for segment in loc:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else str(segment))
    return text


# --- errors in words -------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "set_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "time_delta_type": "expected a duration like 45s, 30m or 1h30m",
    "time_delta_parsing": "expected a duration like 45s, 30m or 1h30m",
    "url_type": "expected a URL",
    "none_required": "expected null",
}

_SLUG = "^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$"
_VAR_NAME = "^[A-Za-z][A-Za-z0-9_]*$"


def _describe_error(error: ErrorDetails) -> str:
    kind, ctx, got = error["type"], error.get("ctx") or {}, _describe_input(error["input"])
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {got}"
    if kind in ("url_parsing", "url_syntax_violation", "url_scheme"):
        return f"expected a URL ({ctx.get('error', error['msg'])}), got {got}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _SLUG:
            return (
                f"expected a lowercase name of letters, digits, '-' and '_' (like 'web-restart'), got {got}"
            )
        if ctx.get("pattern") == _VAR_NAME:
            return f"expected letters, digits and '_', starting with a letter (like 'job_name'), got {got}"
        return f"expected a string matching {ctx.get('pattern')}, got {got}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        return f"must be {sign[kind]} {next(iter(ctx.values()), '?')}, got {got}"
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return str(cause) if cause is not None else error["msg"]
    message = error["msg"]
    return (message[:1].lower() + message[1:]) + f", got {got}"


def _describe_input(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Keys (by alias) of the model found at `loc` below `model`, or [] when it is not a model."""
    target: Any = model
    for segment in loc:
        target = _descend(target, segment)
        if target is None:
            return []
    found = _as_model(target)
    if found is None:
        return []
    return sorted(field.alias or name for name, field in found.model_fields.items())


def _descend(annotation: Any, segment: str | int) -> Any:
    candidates = [annotation]
    while candidates:
        tp = candidates.pop(0)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            candidates.insert(0, args[0])
        elif origin in (typing.Union, types.UnionType):
            candidates[:0] = [arg for arg in args if arg is not type(None)]
        elif isinstance(segment, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, field in tp.model_fields.items():
                if segment in (name, field.alias):
                    return field.annotation
        elif isinstance(segment, str) and origin is dict and len(args) == 2:
            return args[1]
        elif isinstance(segment, int) and origin in (list, tuple, set, frozenset) and args:
            return args[0]
    return None


def _as_model(annotation: Any) -> type[BaseModel] | None:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _as_model(args[0])
    if origin in (typing.Union, types.UnionType):
        models = [m for m in (_as_model(arg) for arg in args) if m is not None]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# --- nodes -----------------------------------------------------------------------------------


def _child(node: yaml.Node | None, segment: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node or None, value node) one step down, the last one when a key is duplicated."""
    if isinstance(node, yaml.MappingNode) and isinstance(segment, str | int):
        found = None
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(segment):
                found = (key, value)
        return found
    if isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
        return None, node.value[segment]
    return None


def _duplicate_keys(root: yaml.Node) -> list[Finding]:
    findings: list[Finding] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                earlier = first.setdefault((key.tag, key.value), key)
                if earlier is not key:
                    line, col = _position(key)
                    findings.append(
                        Finding(
                            line, col, f"duplicate key '{key.value}' (first at line {_position(earlier)[0]})"
                        )
                    )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return findings


def _position(node: yaml.Node | None) -> tuple[int, int]:
    if node is None:
        return 1, 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def _is_blank(node: yaml.Node | None) -> bool:
    """An empty value (`key:` and nothing): its position is past the colon, so point at the key."""
    return isinstance(node, yaml.ScalarNode) and node.value == "" and node.style is None


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return "a scalar" if node.value else "null"
    return "a mapping"


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    if exc.context and exc.problem and exc.context.startswith("expected"):
        return f"YAML syntax error: {exc.context}, {exc.problem}"  # "expected X, but found Y"
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid document'}"
    if exc.problem and exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        if (
            exc.context_mark.line != exc.problem_mark.line
            or exc.context_mark.column != exc.problem_mark.column
        ):
            mark = exc.context_mark
            message += f" ({exc.context} at line {mark.line + 1}, column {mark.column + 1})"
    return message


def _byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    column = len(raw[line_start:offset].decode("utf-8", errors="replace"))
    return raw.count(b"\n", 0, offset) + 1, column + 1


def _text_position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _sorted(path: str, findings: Iterable[Finding]) -> list[Problem]:
    return [Problem(path, *f) for f in sorted(findings, key=lambda f: (f.line, f.col))]
