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

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import ErrorDetails

from remedium.catalog import action_catalog, diagnostic_catalog
from remedium.errors import ProblemsError, TemplateError
from remedium.models.common import UserModel
from remedium.models.runbook import DiagnosticSpec, Runbook
from remedium.names import LLM_DIAGNOSTIC_KIND
from remedium.runbook.templating import (
    check_condition,
    check_template,
    constant_violations,
    error_line,
    is_template,
)
from remedium.runbook.variables import VISIBLE_TO_VARS, Use, parsed, sources, var_graph
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
    "collect_runbooks",
    "expand_paths",
    "load_runbooks",
    "validate_paths",
    "validate_runbook_file",
]

RUNBOOK_SUFFIXES = (".yaml", ".yml")


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
    """All runbooks under `paths`, or ProblemsError with every problem: never a partial set."""
    runbooks, problems = collect_runbooks(paths)
    if problems:
        raise ProblemsError(problems)
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


class LlmQuestion(UserModel):
    """`with` of a `diagnose` entry of kind `llm`: what the runbook asks the investigator."""

    question: str = Field(min_length=1, max_length=2000, description="sent to the model as written")


def _check_llm(loc: Loc, spec: DiagnosticSpec, locate: Locator) -> Iterator[Finding]:
    """The investigator answers in diagnose only; its question is sent as written, so no template."""
    if loc[0] != "diagnose":
        yield locate.at((*loc, "kind"), "diagnostic kind 'llm' is only for diagnose, not verify checks")
        return
    problems = _check_params(LlmQuestion, spec.with_, (*loc, "with"), locate)
    yield from problems
    question = spec.with_.get("question")
    if not problems and isinstance(question, str) and is_template(question):
        message = "the llm question is sent to the model as written: templates are not rendered"
        yield locate.at((*loc, "with", "question"), message)


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
        if spec.kind == LLM_DIAGNOSTIC_KIND:
            yield from _check_llm(loc, spec, locate)
            continue
        diagnostic = diagnostics.get(spec.kind)
        if diagnostic is None:
            known = ", ".join(sorted([*diagnostics, LLM_DIAGNOSTIC_KIND]))
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
    """Templates and conditions must compile now, and not be sure to go over a limit later.

    A limit their constants already pass (`range(10**12)`, `'a' * 5*10**8`) is reported at
    the line inside the template where it is (`constant_violations`: the run time's checks
    on the constant parts of the syntax tree, never running the template itself).
    """
    for source in sources(runbook):
        try:
            (check_condition if source.condition else check_template)(source.text)
            violations = constant_violations(source.text, condition=source.condition)
        except TemplateError as exc:
            line, col = _inner_position(source.text, source.loc, locate, source.condition)
            yield Finding(line, col, str(exc))
            continue
        kind = "condition" if source.condition else "template"
        for inner_line, message in violations:
            at = _at_line(Use(source.loc, inner_line), locate)
            yield Finding(*at, f"{kind} would exceed a limit: {message}")


def check_vars(runbook: Runbook, locate: Locator) -> Iterator[Finding]:
    """Every `vars.<name>` names a var, no var depends on itself, diagnose uses no facts var."""
    graph = var_graph(runbook)
    defined = ", ".join(sorted(runbook.vars))
    known = f" (defined: {defined})" if defined else " (this runbook defines no vars)"
    for source in sources(runbook):
        refs = parsed(source)
        if refs is None:
            continue  # check_templates reports the syntax error
        for line in refs.whole_vars[:1]:
            message = "use vars.<name>: `vars` on its own hides which var is meant"
            yield Finding(*_at_line(Use(source.loc, line), locate), message)
        for name, line in refs.vars.items():
            use = Use(source.loc, line)
            if name not in runbook.vars:
                yield Finding(*_at_line(use, locate), f"unknown var '{name}'{known}")
            elif source.stage == "diagnose" and (path := graph.facts_path(name)) is not None:
                through = f" (through {', '.join(f'vars.{n}' for n in path[1:])})" if path[1:] else ""
                message = (
                    f"vars.{name} uses facts{through}, so it is rendered after diagnosis: "
                    "diagnose cannot use it"
                )
                yield Finding(*_at_line(use, locate), message)
    for name in graph.names:
        for read, use in graph.reads[name].items():
            if read not in VISIBLE_TO_VARS:
                message = (
                    f"var '{name}' uses '{read}', which vars cannot see (only alert, incident, facts, vars)"
                )
                yield Finding(*_at_line(use, locate), message)
        cycle = graph.cycle(name)
        if cycle is not None:
            message = f"var '{name}' depends on itself: {' -> '.join(cycle)}"
            yield Finding(*_at_line(graph.uses[name][cycle[1]], locate), message)


def _at_line(use: Use, locate: Locator) -> tuple[int, int]:
    """Where a use is: the template's position, or its own line inside a literal block (`|`)."""
    node = locate.node(use.loc)
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        index = node.start_mark.line + use.line  # 0-based; content starts below the `|`
        if index < len(locate.lines):
            text = locate.lines[index]
            return index + 1, len(text) - len(text.lstrip()) + 1
    return locate(use.loc)


def _inner_position(source: str, loc: Loc, locate: Locator, condition: bool) -> tuple[int, int]:
    """In a literal block scalar (`|`), point at the template's own failing line."""
    node = locate.node(loc)
    if not isinstance(node, yaml.ScalarNode) or node.style != "|":
        return locate(loc)
    line = error_line(source, condition=condition)  # in the sandbox: a plain Environment folds constants
    return locate(loc) if line is None else _at_line(Use(loc, line), locate)


CHECKS: tuple[Check[Runbook], ...] = (check_catalog, check_ids, check_templates, check_vars)
