"""Load runbooks all-or-nothing, with every problem reported as `path:line:col: message`.

A worker must never run with half its runbooks, and an author should see every mistake at
once: schema errors first, then what the schema cannot know (registered actions and
diagnostics, their parameters, unique step ids, template and condition syntax).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from activities.registry import action_catalog, diagnostic_catalog
from remedium.models.runbook import DiagnosticSpec, Runbook
from remedium.runbook.templating import TemplateError, check_condition, check_template, is_template
from remedium.yamldoc import (
    Check,
    Finding,
    Loc,
    Locator,
    Problem,
    explain_errors,
    read_yaml,
    validate_document,
)

__all__ = [
    "RunbookError",
    "collect_runbooks",
    "expand_paths",
    "load_runbooks",
    "validate_paths",
    "validate_runbook_file",
]

RUNBOOK_SUFFIXES = (".yaml", ".yml")


class RunbookError(Exception):
    """One or more runbook files are invalid; `problems` has every one of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def validate_runbook_file(
    path: Path | str, display: str | None = None
) -> tuple[Runbook | None, list[Problem]]:
    """Check one file; the runbook comes back only when the file has no problem at all."""
    runbook, problems, _ = _check_file(str(path) if display is None else display, Path(path))
    return (runbook if not problems else None), problems


def expand_paths(paths: Iterable[Path | str]) -> tuple[list[str], list[Problem]]:
    """Files as given, directories as their `*.yaml`/`*.yml` files (sorted, not recursive)."""
    files: list[str] = []
    problems: list[Problem] = []
    for given in paths:
        text = str(given)
        path = Path(given)
        if path.is_dir():
            names = sorted(
                entry.name for entry in path.iterdir() if entry.suffix in RUNBOOK_SUFFIXES and entry.is_file()
            )
            files += [os.path.join(text, name) for name in names]
        elif path.exists():
            files.append(text)
        else:
            problems.append(Problem(text, 1, 1, "no such file or directory"))
    return files, problems


def collect_runbooks(paths: Iterable[Path | str]) -> tuple[list[Runbook], list[Problem]]:
    """Every valid runbook and every problem (including names used twice across files)."""
    files, problems = expand_paths(paths)
    runbooks: list[Runbook] = []
    first_seen: dict[str, str] = {}
    for file in files:
        runbook, file_problems, locate = _check_file(file, Path(file))
        if runbook is not None and locate is not None:
            name_loc: Loc = ("metadata", "name")
            if runbook.name in first_seen:
                line, col = locate(name_loc)
                message = f"duplicate runbook name '{runbook.name}' (first in {first_seen[runbook.name]})"
                file_problems = sorted([*file_problems, Problem(file, line, col, message)], key=_order)
            else:
                first_seen[runbook.name] = f"{file}:{locate(name_loc)[0]}"
        problems += file_problems
        if runbook is not None and not file_problems:
            runbooks.append(runbook)
    return runbooks, problems


def validate_paths(paths: Iterable[Path | str]) -> list[Problem]:
    return collect_runbooks(paths)[1]


def load_runbooks(paths: Iterable[Path | str]) -> list[Runbook]:
    """All runbooks under `paths`, or RunbookError with every problem: never a partial set."""
    runbooks, problems = collect_runbooks(paths)
    if problems:
        raise RunbookError(problems)
    return runbooks


def _check_file(display: str, path: Path) -> tuple[Runbook | None, list[Problem], Locator | None]:
    """(schema-valid runbook or None, problems, locator); the runbook may come with problems."""
    doc, problems = read_yaml(path, display)
    if doc is None:
        return None, problems, None
    runbook, more = validate_document(doc, Runbook, CHECKS)
    return runbook, sorted(problems + more, key=_order), doc.locate


def _order(problem: Problem) -> tuple[int, int]:
    return problem.line, problem.col


# --- semantic checks -------------------------------------------------------------------------


def _diagnostics(runbook: Runbook) -> Iterator[tuple[Loc, DiagnosticSpec]]:
    for i, spec in enumerate(runbook.diagnose):
        yield ("diagnose", i), spec
    for i, spec in enumerate(runbook.verify.checks):
        yield ("verify", "checks", i), spec


def check_catalog(runbook: Runbook, locate: Locator) -> Iterator[Finding]:
    """Actions and diagnostic kinds must be registered, and their `with` must fit their params."""
    actions, diagnostics = action_catalog(), diagnostic_catalog()
    for i, step in enumerate(runbook.plan):
        loc: Loc = ("plan", i)
        action = actions.get(step.action)
        if action is None:
            known = ", ".join(sorted(actions))
            yield locate.at((*loc, "action"), f"unknown action '{step.action}' (known: {known})")
        else:
            yield from _check_params(action.params_model, step.with_, (*loc, "with"), locate)
    for loc, spec in _diagnostics(runbook):
        diagnostic = diagnostics.get(spec.kind)
        if diagnostic is None:
            known = ", ".join(sorted(diagnostics))
            yield locate.at((*loc, "kind"), f"unknown diagnostic kind '{spec.kind}' (known: {known})")
        else:
            yield from _check_params(diagnostic.params_model, spec.with_, (*loc, "with"), locate)


def _check_params(model: type[BaseModel], params: dict[str, Any], loc: Loc, locate: Locator) -> list[Finding]:
    try:
        model.model_validate(params)
    except ValidationError as exc:
        return explain_errors(exc, model, locate, prefix=loc, skip=_rendered_later)
    return []


def _rendered_later(error: ErrorDetails) -> bool:
    """A template where a URL or number is expected is fine: it is rendered at run time."""
    return error["type"] not in ("missing", "extra_forbidden") and is_template(error["input"])


def check_ids(runbook: Runbook, locate: Locator) -> Iterator[Finding]:
    """Step ids are unique within the plan; diagnostics and verify checks share the facts namespace."""
    plan = [(("plan", i), step.id) for i, step in enumerate(runbook.plan)]
    facts = [(loc, spec.id) for loc, spec in _diagnostics(runbook)]
    for group in (plan, facts):
        first: dict[str, Loc] = {}
        for loc, step_id in group:
            if step_id in first:
                line = locate((*first[step_id], "id"))[0]
                yield locate.at((*loc, "id"), f"duplicate step id '{step_id}' (first at line {line})")
            else:
                first[step_id] = loc


def check_templates(runbook: Runbook, locate: Locator) -> Iterator[Finding]:
    """Templates and conditions must compile now, not in the middle of an incident."""
    for i, step in enumerate(runbook.plan):
        yield from _check_with(step.with_, ("plan", i, "with"), locate)
        if step.when is not None:
            yield from _check_source(step.when, ("plan", i, "when"), locate, condition=True)
    for loc, spec in _diagnostics(runbook):
        yield from _check_with(spec.with_, (*loc, "with"), locate)
    conditions: list[tuple[Loc, str]] = [
        (("decide", "when", i), c) for i, c in enumerate(runbook.decide.when)
    ]
    conditions += [(("verify", "success", i), c) for i, c in enumerate(runbook.verify.success)]
    conditions += [(("verify", "worse_if", i), c) for i, c in enumerate(runbook.verify.worse_if)]
    for loc, source in conditions:
        yield from _check_source(source, loc, locate, condition=True)
    templates: list[tuple[Loc, str]] = [
        (("escalate", "message"), runbook.escalate.message),
        (("report", "summary"), runbook.report.summary),
    ]
    templates += [(("report", "follow_ups", i), t) for i, t in enumerate(runbook.report.follow_ups)]
    for loc, source in templates:
        yield from _check_source(source, loc, locate, condition=False)


def _check_with(value: Any, loc: Loc, locate: Locator) -> Iterator[Finding]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _check_with(item, (*loc, key), locate)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _check_with(item, (*loc, i), locate)
    elif is_template(value):  # only these are rendered (see templating.render_value)
        yield from _check_source(value, loc, locate, condition=False)


def _check_source(source: str, loc: Loc, locate: Locator, *, condition: bool) -> Iterator[Finding]:
    try:
        (check_condition if condition else check_template)(source)
    except TemplateError as exc:
        line, col = _inner_position(source, loc, locate, condition)
        yield Finding(line, col, str(exc))


def _inner_position(source: str, loc: Loc, locate: Locator, condition: bool) -> tuple[int, int]:
    """In a literal block scalar (`|`), point at the template's own failing line."""
    node = locate.node(loc)
    if not isinstance(node, yaml.ScalarNode) or node.style != "|":
        return locate(loc)
    try:
        if condition:
            jinja2.Environment().compile_expression(source)
        else:
            jinja2.Environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        index = node.start_mark.line + (exc.lineno or 1)  # 0-based; content starts below the `|`
        if index < len(locate.lines):
            text = locate.lines[index]
            return index + 1, len(text) - len(text.lstrip()) + 1
    return locate(loc)


CHECKS: tuple[Check[Runbook], ...] = (check_catalog, check_ids, check_templates)
