"""Bounds on what one template or condition may cost: time, memory, and the size of what it builds.

Templates run on the worker, next to every other incident (and, under `remedium up`, on the
same event loop as the ingress), so none may take the process with it. Three layers:

1. Operations that allocate by a count are checked *before* they run, from their operands:
   `*` and `**` (result length, integer digits), `+`, `~`, `%` and `str.format` (widths,
   precisions, result length), `range()` (Jinja's own MAX_RANGE), the str methods and filters
   whose size comes from an argument (`center`, `ljust`, `rjust`, `zfill`, `expandtabs`,
   `replace`, `join`, `translate`, `int.to_bytes`, `|center`, `|indent`, `|wordwrap`,
   `|truncate`, `|join`, `|replace`, `|format`, `|batch`, `|slice`, `|sum`, `|tojson`), and
   every list, tuple or dict a template builds (a literal, a call, a filter) by its *weight*:
   the characters it would take as text, a shared part counted each time it appears, so
   `[s, s, s]` nested ten deep is refused instead of built.
2. Whatever text a template produces (its output, a `{% set %}` block, a macro) is counted
   as it is joined, and refused past MAX_TEXT.
3. `bounded` runs the whole render under a trace function in its thread: past the
   deadline, or once the process has grown by MEMORY_LIMIT during the render, the next
   Python call or template line raises. Layer 1 is what makes this enough: no single
   C-level operation a template can reach runs long or allocates much, so control comes
   back to the tracer. (One exception: the `regex` filter's pattern runs in C; a pattern
   that backtracks catastrophically is not interrupted.)

A check that fails raises `LimitExceeded` with one sentence saying which limit and by how
much (`'*' result would be 500000000 characters (limit 1000000)`); `templating` turns it
into a TemplateError, which the workflow records as a failed fact or decision.

For `remedium runbook validate`, `templating.constant_violations` applies the same checks
to the constant parts of a template's syntax tree.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from types import BuiltinMethodType, FrameType
from typing import Any, TypeVar

from jinja2.sandbox import MAX_RANGE, safe_range

from remedium.errors import TemplateError

__all__ = [
    "MAX_DIGITS",
    "MAX_RANGE",
    "MAX_TEXT",
    "MAX_WEIGHT",
    "MEMORY_LIMIT",
    "TIME_LIMIT_S",
    "BoundExceeded",
    "LimitExceeded",
    "bounded",
    "check_binop",
    "check_call",
    "check_format_field",
    "check_percent",
    "check_value",
    "checkpoint",
    "concat_values",
    "join_text",
    "limited_filter",
    "limited_range",
    "weight",
]

MAX_TEXT = 1_000_000
"""Characters: the longest string a template may build, and the longest output it may render."""

MAX_WEIGHT = 10_000_000
"""Characters as text: the heaviest list, tuple or dict a template may build (see `weight`).

Ten times MAX_TEXT, so that a template can still carry facts around (a fact crosses Temporal,
whose payloads stop at 2 MB, so no real fact comes near this); only repetition gets here.
"""

MAX_DIGITS = 4300
"""Decimal digits of an integer result: Python's own limit for turning an int into text."""

TIME_LIMIT_S = 2.0
"""Seconds one template or condition may run (compiling included)."""

MEMORY_LIMIT = 256 * 1024 * 1024
"""Bytes the process may grow by while one template renders."""

_MEMORY_EVERY_S = 0.001  # how often the tracer reads the process size: a few µs per millisecond


class LimitExceeded(TemplateError):
    """A template or condition would go over one of the limits; the message says which.

    Not a ValueError or TypeError, which some filters catch and turn into a default; Jinja's
    compile-time constant folding catches it (as any Exception) and leaves the expression
    to run time, where it fails the render.
    """


class BoundExceeded(TemplateError):
    """Raised by the tracer of `bounded` at the deadline, or at the memory bound.

    CPython removes a trace function that raises, so it is raised once; should some
    `except Exception` swallow it (Jinja's compile-time folding would), `bounded` raises it
    again between compiling and rendering (`checkpoint`) and when the function returns.
    """


# --- weight ---------------------------------------------------------------------------------


def weight(value: object) -> int:
    """About how many characters `value` would take as text, each shared part counted at each use.

    Stops counting past MAX_WEIGHT (the result is then some number above it), so weighing a
    big fact costs at most that many steps; inside `bounded`, each container is weighed once
    per render. Views, generators and other lazy objects weigh 1: what they produce is
    weighed when something builds it.
    """
    memo: dict[int, tuple[object, int]] | None = getattr(_active, "weights", None)
    try:
        return _weigh(value, {} if memo is None else memo)
    except RecursionError:
        raise LimitExceeded("a value is nested too deeply to measure") from None


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _weigh(value: object, memo: dict[int, tuple[object, int]]) -> int:
    """The weight of `value`; `memo` keeps each container with its weight (so its id stays its own)."""
    if not isinstance(value, _CONTAINERS):
        return _scalar_weight(value)
    key = id(value)
    if key in memo:
        return memo[key][1]
    memo[key] = (value, MAX_WEIGHT + 1)  # a cycle (never built by a template) counts as too heavy
    total = 2
    pairs = isinstance(value, dict)
    items: Iterable[Any] = value.items() if isinstance(value, dict) else value
    for item in items:
        for part in item if pairs else (item,):
            kind = type(part)  # the common cases inline: a call each would double the cost
            if kind is str:
                total += len(part) + 4
            elif kind is int:
                total += part.bit_length() // 3 + 4
            elif isinstance(part, _CONTAINERS):
                total += _weigh(part, memo) + 2
            else:
                total += _scalar_weight(part) + 2
        if total > MAX_WEIGHT:
            break
    memo[key] = (value, total)
    return total


def _scalar_weight(value: object) -> int:
    if isinstance(value, str | bytes | bytearray):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return _digits(value) + 1
    if isinstance(value, float):
        return 24
    return 1


def _digits(number: int) -> int:
    """Decimal digits of an int, from its bit length (exact enough, and never converts it)."""
    return max(1, math.ceil(abs(number).bit_length() * math.log10(2)))


def check_value(value: Any, what: str, text_limit: int = MAX_TEXT) -> Any:
    """`value` if a template may hold it: a string up to `text_limit`, anything else up to MAX_WEIGHT.

    What a filter or method returns is checked with MAX_WEIGHT for strings too: its size
    was checked before the call where an argument sets it, and a fact's text passes through
    `|trim` or `|lower` at its own size.
    """
    if isinstance(value, str | bytes | bytearray):
        if len(value) > text_limit:
            raise LimitExceeded(f"{what} would be {len(value)} characters (limit {text_limit})")
    elif isinstance(value, list | tuple | dict | set | frozenset):
        heavy = weight(value)
        _weight_limit(heavy, what, heavy)
    return value


def _weight_limit(heavy: int, what: str, *parts: int) -> None:
    """Refuse a weight over MAX_WEIGHT; `parts` over it were not counted to the end (see `weight`)."""
    if heavy <= MAX_WEIGHT:
        return
    if any(part > MAX_WEIGHT for part in parts):
        raise LimitExceeded(f"{what} would take more than {MAX_WEIGHT} characters as text (the limit)")
    raise LimitExceeded(f"{what} would take {_shown(heavy)} characters as text (limit {MAX_WEIGHT})")


def _shown(number: int) -> str:
    """A number for a message: as it is, or `about 10**N` when it is too long to read."""
    return str(number) if number < 10**15 else f"about 10**{_digits(number) - 1}"


def _about(number: int) -> str:
    shown = _shown(number)
    return shown if shown.startswith("about") else f"about {shown}"


def _text_limit(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise LimitExceeded(f"{what} would be {_shown(size)} characters (limit {MAX_TEXT})")


def _count_limit(count: Any, what: str, limit: int = MAX_TEXT) -> None:
    if isinstance(count, int) and count > limit:
        raise LimitExceeded(f"{what} {_shown(count)} is over the limit of {limit}")


# --- operators ------------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` when its result would be over a limit, before computing it."""
    if operator == "*":
        _check_multiply(left, right)
    elif operator == "**":
        _check_power(left, right)
    elif operator == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            _text_limit(len(left) + len(right), "'+' result")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            parts = (weight(left), weight(right))
            _weight_limit(sum(parts) - 2, "'+' result", *parts)
    elif operator == "%" and isinstance(left, str | bytes):
        check_percent(left, right, "'%'")


def _check_multiply(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        digits = _digits(left) + _digits(right)
        if digits > MAX_DIGITS + 1:
            raise LimitExceeded(f"'*' result would have {_about(digits)} digits (limit {MAX_DIGITS})")
        return
    sequence, count = (left, right) if isinstance(right, int) else (right, left)
    if not isinstance(sequence, _SEQUENCES) or not isinstance(count, int) or count <= 1:
        return
    if isinstance(sequence, str | bytes):
        _text_limit(len(sequence) * count, "'*' result")
        return
    once = weight(sequence)
    _weight_limit((once - 2) * count + 2, "'*' result", once)


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 1 or abs(base) <= 1:
        return  # a float overflows at once; a negative exponent gives a float
    digits = math.floor(exponent * math.log10(abs(base))) + 1
    if digits > MAX_DIGITS:
        raise LimitExceeded(f"'**' result would have {_about(digits)} digits (limit {MAX_DIGITS})")


_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<kind>.)",
    re.DOTALL,
)


def check_percent(template: str | bytes, values: Any, operation: str) -> None:
    """`template % values` (`operation` is `'%'` or `|format`): widths, precisions, result within MAX_TEXT."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    mapping = values if isinstance(values, Mapping) else None
    positional = list(values) if isinstance(values, tuple) else [values]
    index = 0

    def take() -> Any:
        nonlocal index
        value = positional[index] if index < len(positional) else None
        index += 1
        return value

    size = len(text)
    for spec in _PERCENT_SPEC.finditer(text):
        if spec["kind"] == "%":
            continue
        sizes = []
        for part in (spec["width"], spec["precision"]):
            amount = take() if part == "*" else _spec_number(part)
            if isinstance(amount, int) and not isinstance(amount, bool):
                _count_limit(abs(amount), f"{operation} width or precision")
                sizes.append(abs(amount))
        if mapping is not None and spec["key"] is not None:
            value = mapping.get(spec["key"])
        else:
            value = take()
        size += max([weight(value), *sizes])
    _text_limit(size, f"{operation} result")


def _spec_number(part: str | None) -> int | None:
    """A width or precision as written (one too long for int() counts as 10**4000)."""
    if not part:
        return None
    return int(part) if len(part) <= 4000 else 10**4000


_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?")


def check_format_field(value: Any, format_spec: str) -> int:
    """One `{...}` of `str.format`: its width and precision within MAX_TEXT; returns its size."""
    found = _FORMAT_SPEC.match(format_spec)
    sizes = [weight(value)]
    if found is not None:
        for part in (found["width"], found["precision"]):
            amount = _spec_number(part)
            if amount is not None:
                _count_limit(amount, "format() width or precision")
                sizes.append(amount)
    return max(sizes)


def join_text(parts: Iterable[Any], what: str = "template output") -> str:
    """`"".join` of text as it comes, refused once it would pass MAX_TEXT (output, blocks, macros)."""
    chunks: list[str] = []
    size = 0
    for part in parts:
        size += len(part)
        if size > MAX_TEXT:
            raise LimitExceeded(f"{what} would be over the limit of {MAX_TEXT} characters")
        chunks.append(part)
    return "".join(chunks)


def concat_values(values: tuple[Any, ...]) -> str:
    """The `~` operator: each operand as text, the result within MAX_TEXT."""
    texts = []
    size = 0
    for value in values:
        if not isinstance(value, str):
            heavy = weight(value)
            _weight_limit(heavy, "'~' operand", heavy)
            value = str(value)
        size += len(value)
        texts.append(value)
    _text_limit(size, "'~' result")
    return "".join(texts)


def limited_range(*args: int) -> range:
    """Jinja's `safe_range` (at most MAX_RANGE items), refusing in our words before building anything."""
    try:
        count = len(range(*args))
    except OverflowError:  # more items than a C ssize_t
        count = sys.maxsize
    except TypeError:
        return safe_range(*args)  # let range() say what is wrong with its arguments
    if count > MAX_RANGE:
        shown = f"more than {sys.maxsize}" if count == sys.maxsize else str(count)
        raise LimitExceeded(f"range() would have {shown} items (limit {MAX_RANGE})")
    return safe_range(*args)


# --- calls ----------------------------------------------------------------------------------


def check_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a str/bytes/int method call whose result would be over a limit; the args to call it with.

    `join` gets its iterable as a list, so that what is measured is what gets joined.
    """
    if not isinstance(function, BuiltinMethodType):
        return args
    owner = getattr(function, "__self__", None)
    name = function.__name__
    if isinstance(owner, int) and not isinstance(owner, bool) and name == "to_bytes":
        _count_limit(_arg(args, kwargs, 0, "length", 1), "to_bytes() length", MAX_TEXT)
    if not isinstance(owner, str | bytes):
        return args
    what = f"{name}() result"
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _arg(args, kwargs, 0, "width", 0)
        if isinstance(width, int):
            _text_limit(width, what)
    elif name == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(tabsize, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _text_limit(len(owner) + tabs * tabsize, what)
    elif name == "replace":
        old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
        count = _arg(args, kwargs, 2, "count", -1)
        _check_replace(owner, old, new, count, what)
    elif name == "join" and args:
        items = list(args[0])
        _check_join(owner, items, what)
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        _text_limit(len(owner) * max(longest, 1), what)
    return args


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_replace(text: Any, old: Any, new: Any, count: Any, what: str) -> None:
    if not (isinstance(text, str | bytes) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return
    found: int = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]  # same type, checked
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _text_limit(len(text) + found * (len(new) - len(old)), what)


def _check_join(separator: Any, items: list[Any], what: str) -> None:
    size = len(separator) * max(len(items) - 1, 0)
    _text_limit(size, what)
    for item in items:
        size += len(item) if type(item) is str else weight(item) - 2
        _text_limit(size, what)


# --- filters --------------------------------------------------------------------------------

Checker = Callable[[dict[str, Any]], None]
F = TypeVar("F", bound=Callable[..., Any])


def _text_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _center(a: dict[str, Any]) -> None:
    _count_limit(a.get("width"), "|center width")


def _indent(a: dict[str, Any]) -> None:
    width = a.get("width")
    _count_limit(width, "|indent width")
    indent = width if isinstance(width, str) else " " * width if isinstance(width, int) else ""
    text = _text_of(a.get("s"))
    if text is not None:
        _text_limit(len(text) + (text.count("\n") + 1) * len(indent), "|indent result")


def _wordwrap(a: dict[str, Any]) -> None:
    width = a.get("width")
    _count_limit(width, "|wordwrap width")
    text = _text_of(a.get("s"))
    wrapstring = a.get("wrapstring")
    if text is not None and isinstance(wrapstring, str) and isinstance(width, int) and width > 0:
        lines = len(text) // width + text.count("\n") + 1
        _text_limit(len(text) + lines * len(wrapstring), "|wordwrap result")


def _truncate(a: dict[str, Any]) -> None:
    _count_limit(a.get("length"), "|truncate length")
    _count_limit(a.get("leeway"), "|truncate leeway")


def _join(a: dict[str, Any]) -> None:
    value = a.get("value")
    if isinstance(value, Iterable) and not isinstance(value, str | Mapping):
        a["value"] = items = list(value)
        separator = a.get("d")
        if a.get("attribute") is None and isinstance(separator, str):
            _check_join(separator, items, "|join result")


def _replace(a: dict[str, Any]) -> None:
    _check_replace(a.get("s"), a.get("old"), a.get("new"), a.get("count"), "|replace result")


def _format(a: dict[str, Any]) -> None:
    value = a.get("value")
    if isinstance(value, str):
        check_percent(value, a.get("kwargs") or tuple(a.get("args", ())), "|format")


def _batch(a: dict[str, Any]) -> None:
    count = a.get("linecount")
    _count_limit(count, "|batch size")
    if isinstance(count, int) and a.get("fill_with") is not None:
        once = weight(a.get("fill_with"))
        _weight_limit(once * count, "|batch fill", once)


def _slice(a: dict[str, Any]) -> None:
    _count_limit(a.get("slices"), "|slice count", MAX_RANGE)


def _sum(a: dict[str, Any]) -> None:
    start = a.get("start")
    value = a.get("iterable")
    if isinstance(start, int | float) or not isinstance(value, Iterable):
        return
    a["iterable"] = items = list(value)
    parts = [weight(start), *(weight(item) for item in items)]
    _weight_limit(sum(parts), "|sum result", *parts)


def _tojson(a: dict[str, Any]) -> None:
    indent = a.get("indent")
    _count_limit(len(indent) if isinstance(indent, str) else indent, "|tojson indent", 64)


FILTER_CHECKS: dict[str, Checker] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "truncate": _truncate,
    "join": _join,
    "replace": _replace,
    "format": _format,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
}
"""Filters whose result size comes from an argument: checked (from their bound arguments) first."""


def limited_filter(name: str, function: F) -> F:
    """`function` as a filter whose arguments are checked first and whose result is weighed after.

    Keeps the filter's own attributes (`jinja_pass_arg`), so Jinja passes it the environment
    or context as before; Jinja's compile-time folding runs it too, and a limit it raises
    there leaves the call to run time.
    """
    check = FILTER_CHECKS.get(name)
    inner = inspect.unwrap(function)  # an async-variant filter: its sync function has the signature
    # ...and gets no eval context, which Jinja passes to the async-variant wrapper all the same.
    passed = int(_passes_arg(function) and not _passes_arg(inner))
    signature = inspect.signature(inner)

    @wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            head, rest = args[:passed], args[passed:]
            try:
                bound = signature.bind(*rest, **kwargs)
            except TypeError:
                return function(*args, **kwargs)  # the filter says what is wrong with its arguments
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            check(arguments)
            bound.arguments.update(arguments)
            args, kwargs = (*head, *bound.args), bound.kwargs
        return check_value(function(*args, **kwargs), f"|{name} result", MAX_WEIGHT)

    return limited  # type: ignore[return-value]


def _passes_arg(function: Any) -> bool:
    """Whether Jinja passes `function` its context, eval context or environment first."""
    return getattr(function, "jinja_pass_arg", None) is not None


# --- time and memory ------------------------------------------------------------------------

_active = threading.local()


class _Bounds:
    """The trace function of one bounded render: deadline, and growth of the process."""

    def __init__(self, what: str, seconds: float, memory: int) -> None:
        self.what = what
        self.seconds = seconds
        self.memory = memory
        self.deadline = time.monotonic() + seconds
        self.start_size = _process_size()
        self.next_memory_check = 0.0
        self.fired: str | None = None  # the message, once raised

    def __call__(self, frame: FrameType, event: str, arg: Any) -> _Bounds | None:
        now = time.monotonic()
        if now > self.deadline:
            self.fired = f"{self.what} exceeded its {self.seconds:g} s time limit"
            raise BoundExceeded(self.fired)
        if self.start_size is not None and now >= self.next_memory_check:
            self.next_memory_check = now + _MEMORY_EVERY_S
            size = _process_size()
            if size is not None and size - self.start_size > self.memory:
                self.fired = f"{self.what} exceeded its memory limit ({self.memory // (1024 * 1024)} MB)"
                raise BoundExceeded(self.fired)
        if event == "call" and frame.f_code.co_filename != "<template>":
            # Other code (Jinja's runtime, filters, these checks) is checked at each call it
            # makes: its loops are bounded by the sizes above. Line by line, only the
            # template's own code, whose loops may call nothing.
            return None
        return self


def _process_size() -> int | None:
    """Resident bytes of this process (Linux), or None where /proc does not say."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 128).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

T = TypeVar("T")


def bounded(
    what: str,
    function: Callable[..., T],
    *args: Any,
    seconds: float = TIME_LIMIT_S,
    memory: int = MEMORY_LIMIT,
) -> T:
    """`function(*args)` with a deadline and a memory bound, enforced in this thread by sys.settrace.

    The trace function sees every Python call the render makes (Jinja's runtime, filters,
    macros) and every line of the template's own code, and raises BoundExceeded at the first
    one past the bound. Why not a watchdog thread: an abandoned render would keep running
    (and holding the GIL) after its activity failed; an exception injected from outside
    (PyThreadState_SetAsyncExc) can land after the render ended, in whatever the pool
    thread runs next. The tracer stops the render itself, in its own thread, and costs
    about 3x on template code, which renders in well under a millisecond.
    A bound already running in this thread (a render inside a render) is the one in force.
    Any trace function already set (a debugger, coverage) is put back afterwards.
    """
    if getattr(_active, "bounds", None) is not None:
        return function(*args)
    previous = sys.gettrace()
    bounds = _Bounds(what, seconds, memory)
    _active.bounds = bounds
    _active.weights = {}
    sys.settrace(bounds)
    try:
        result = function(*args)
        if bounds.fired is not None:  # swallowed on the way: the result is not to be trusted
            raise BoundExceeded(bounds.fired)
        return result
    finally:
        sys.settrace(previous)
        _active.bounds = None
        _active.weights = None


def checkpoint() -> None:
    """Inside `bounded`: raise if its bound was passed (and swallowed), else make sure it is on.

    Called between compiling a template and running it: compiling folds constants through
    the filters, and Jinja's folding catches any exception, the bound's own included, after
    which CPython has removed the tracer.
    """
    bounds: _Bounds | None = getattr(_active, "bounds", None)
    if bounds is None:
        return
    if bounds.fired is not None:
        raise BoundExceeded(bounds.fired)
    sys.settrace(bounds)
