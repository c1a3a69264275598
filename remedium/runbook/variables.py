"""A runbook's `vars`: where its templates are, which vars each one uses, and the two groups.

`vars:` names values once (`namespace: '{{ alert.labels.namespace }}'`) for every later
template to use as `vars.namespace`. A var that uses `facts`, directly or through another
var, belongs to the facts group, rendered once after diagnosis; every other var belongs to
the alert group, rendered once from the alert before diagnosis. References are read from
each template's Jinja2 syntax tree (`templating.references`), never from its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from remedium.errors import TemplateError
from remedium.models.runbook import Runbook
from remedium.runbook.templating import References, is_template, references
from remedium.yamldoc import Loc

__all__ = [
    "VISIBLE_TO_VARS",
    "Source",
    "Stage",
    "Use",
    "VarGraph",
    "parsed",
    "sources",
    "template_strings",
    "var_graph",
]

Stage = Literal["vars", "diagnose", "later"]
"""When a template is rendered: a var's own, a diagnose param (before facts), or after diagnosis."""

VISIBLE_TO_VARS = frozenset({"alert", "incident", "facts", "vars"})
"""The context names a var's template can read (outcome, reason, round... come later)."""


@dataclass(frozen=True)
class Source:
    """One template or condition of a runbook, where the document spells it."""

    loc: Loc
    text: str
    condition: bool
    stage: Stage


@dataclass(frozen=True)
class Use:
    """Where a template uses a name: the template's `loc` and the line inside the template."""

    loc: Loc
    line: int


def template_strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every template string inside a `with:` or a var's value (the ones `render_value` renders)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from template_strings(item, (*loc, i))
    elif is_template(value):
        yield loc, value


def sources(runbook: Runbook) -> Iterator[Source]:
    """Every template and condition of the runbook, in document section order."""
    for name, value in runbook.vars.items():
        for loc, text in template_strings(value, ("vars", name)):
            yield Source(loc, text, False, "vars")
    for i, spec in enumerate(runbook.diagnose):
        for loc, text in template_strings(spec.with_, ("diagnose", i, "with")):
            yield Source(loc, text, False, "diagnose")
    for i, condition in enumerate(runbook.decide.when):
        yield Source(("decide", "when", i), condition, True, "later")
    for i, step in enumerate(runbook.plan):
        for loc, text in template_strings(step.with_, ("plan", i, "with")):
            yield Source(loc, text, False, "later")
        if step.when is not None:
            yield Source(("plan", i, "when"), step.when, True, "later")
    for i, spec in enumerate(runbook.verify.checks):
        for loc, text in template_strings(spec.with_, ("verify", "checks", i, "with")):
            yield Source(loc, text, False, "later")
    for i, condition in enumerate(runbook.verify.success):
        yield Source(("verify", "success", i), condition, True, "later")
    for i, condition in enumerate(runbook.verify.worse_if):
        yield Source(("verify", "worse_if", i), condition, True, "later")
    for i, condition in enumerate(runbook.escalate.when):
        yield Source(("escalate", "when", i), condition, True, "later")
    yield Source(("escalate", "message"), runbook.escalate.message, False, "later")
    yield Source(("report", "summary"), runbook.report.summary, False, "later")
    for i, text in enumerate(runbook.report.follow_ups):
        yield Source(("report", "follow_ups", i), text, False, "later")


def parsed(source: Source) -> References | None:
    """The source's references, or None when it does not parse (the syntax check reports that)."""
    try:
        return references(source.text, condition=source.condition)
    except TemplateError:
        return None


@dataclass
class VarGraph:
    """Which var uses which, in document order; `uses[a][b]` is where a's template uses b."""

    names: list[str]
    uses: dict[str, dict[str, Use]] = field(default_factory=dict)
    reads: dict[str, dict[str, Use]] = field(default_factory=dict)  # var -> context name -> first use

    def facts_path(self, name: str) -> list[str] | None:
        """[name, ..., v] where v's template reads `facts` itself; None when no path leads to facts."""
        seen: set[str] = set()

        def walk(current: str) -> list[str] | None:
            if current in seen:
                return None
            seen.add(current)
            if "facts" in self.reads.get(current, {}):
                return [current]
            for dep in self.uses.get(current, {}):
                if dep in self.uses:
                    found = walk(dep)
                    if found is not None:
                        return [current, *found]
            return None

        return walk(name)

    def uses_facts(self, name: str) -> bool:
        return self.facts_path(name) is not None

    def cycle(self, name: str) -> list[str] | None:
        """The shortest path name -> ... -> name through var uses, or None when name is on no cycle."""
        paths = [[name]]
        seen = {name}
        while paths:
            path = paths.pop(0)
            for dep in self.uses.get(path[-1], {}):
                if dep == name:
                    return [*path, name]
                if dep in self.uses and dep not in seen:
                    seen.add(dep)
                    paths.append([*path, dep])
        return None

    def order(self) -> list[str]:
        """Every var after the vars it uses, else in document order; vars on a cycle come last."""
        done: list[str] = []
        pending = list(self.names)
        while pending:
            ready = [n for n in pending if all(d in done or d not in self.uses for d in self.uses[n])]
            if not ready:
                return done + pending  # a cycle: these fail when rendered ("has no value")
            done.append(ready[0])
            pending.remove(ready[0])
        return done

    def groups(self) -> tuple[list[str], list[str]]:
        """(alert group, facts group), each in render order."""
        ordered = self.order()
        facts = [n for n in ordered if self.uses_facts(n)]
        return [n for n in ordered if n not in facts], facts


def var_graph(runbook: Runbook) -> VarGraph:
    graph = VarGraph(names=list(runbook.vars))
    for name in graph.names:
        graph.uses[name], graph.reads[name] = {}, {}
    for source in sources(runbook):
        if source.stage != "vars":
            break  # vars come first
        refs = parsed(source)
        if refs is None:
            continue
        name = str(source.loc[1])
        for dep, line in refs.vars.items():
            graph.uses[name].setdefault(dep, Use(source.loc, line))
        for read, line in refs.names.items():
            graph.reads[name].setdefault(read, Use(source.loc, line))
    return graph
