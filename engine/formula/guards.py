"""Run-time guards of the formula evaluator: limits, the budget, sized operations.

The rule: no single operation may do unbounded work, whatever the formula or the record
holds.  So every operation that can produce much more than its inputs, or walk a value in
C code (comparisons, hashing, ``str``/``repr``/``format``, ``int``/``round`` of huge
numbers), checks the cost BEFORE it runs:

- ``*``, ``**``, ``<<``, ``+`` of strings/lists, ``%`` formatting, padding, ``replace``,
  ``join``, ``range`` and the container constructors compute the size of their result;
- comparisons, hashing of tuple keys, ``sorted``/``min``/``max``/``set``/``dict`` and the
  element-comparing methods walk their operands first (:func:`Guards.measure`, counting
  shared sub-values every time they occur, which is what the C code would do), refusing
  more than ``max_items`` elements or nesting deeper than ``max_data_depth``;
- text made from a container (``str``, f-strings, ``%s``, ``to_str``) is estimated first
  and refused above ``max_string`` characters;
- ``int``/``round``/``%d``/``format`` of a ``Decimal`` check its exponent against
  ``max_digits``; ``round`` checks ``ndigits``.

Loops spend a step budget and every evaluation a wall-time budget (checked at every loop
step and after every call).  Error messages quote values through :func:`shorten`, never a
full ``repr``.

Limit codes: F201 time, F202 steps, F203 string/sequence size, F204 number size,
F205 nesting depth of a value.
"""

from __future__ import annotations

import gc
import operator
import re
import reprlib
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal
from itertools import islice
from typing import Any

from engine.errors import (
    DisallowedMethodError,
    FormulaDepthError,
    NumberLimitError,
    SizeLimitError,
    StepLimitError,
    TimeLimitError,
)
from engine.formula.check import (
    DICT_METHODS,
    LIST_METHODS,
    SET_METHODS,
    STR_METHODS,
    TUPLE_METHODS,
    check_format_spec,
)

CONTAINERS = (dict, list, tuple, set, frozenset)
_CONTAINER_TYPES = frozenset(CONTAINERS)


@dataclass(frozen=True)
class Limits:
    """Per-evaluation limits of one :class:`~engine.formula.FormulaEngine`.

    Attributes:
        max_seconds: CPU time of the evaluating thread per evaluation (checked at every loop step and after every call).
        max_steps: loop iterations (for, while, comprehension items) per evaluation.
        max_string: characters in any string a formula produces.
        max_sequence: items in any list/tuple/dict/set a formula produces (and ``range`` length).
        max_items: elements one comparison, hash, sort or conversion to text may walk.
        max_data_depth: deepest nesting of a value a formula compares, converts or returns.
        max_digits: digits of an integer made from a Decimal (``int``, ``round``, ``%d``,
            ``format``) and the largest ``round`` ndigits.
        max_exponent: largest absolute exponent of ``**``.
        max_int_bits: largest integer (in bits) that ``*``, ``**`` and ``<<`` may produce.
        max_source: characters of formula source.
        max_depth: deepest nesting of the formula's syntax tree.
        max_format_width: largest width or precision in an f-string spec or ``%`` format.
    """

    max_seconds: float = 0.25
    max_steps: int = 100_000
    max_string: int = 1_000_000
    max_sequence: int = 100_000
    max_items: int = 100_000
    max_data_depth: int = 100
    max_digits: int = 4_300
    max_exponent: int = 10_000
    max_int_bits: int = 10_000
    max_source: int = 10_000
    max_depth: int = 60
    max_format_width: int = 1_000

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# ------------------------------------------------------------------ bounded messages
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 200
_REPR.maxother = 200
_REPR.maxlong = 200
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _name, 12)


def shorten(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters; a longer one ends ``… (len=N)``.

    Bounded in time and memory whatever ``value`` is (nested, shared or huge): strings are cut
    before they are quoted, containers go through :mod:`reprlib`.
    """
    if type(value) is str:
        if len(value) <= limit:
            return repr(value)
        return repr(value[:limit]) + f"… (len={len(value)})"
    try:
        text = _REPR.repr(value)
    except Exception:  # e.g. an int above Python's str-conversion limit
        text = f"<{type(value).__name__}>"
    if len(text) > limit or (type(value) in _CONTAINER_TYPES and len(value) > 12):
        try:
            n = len(value)
        except Exception:
            n = len(text)
        return text[:limit] + f"… (len={n})"
    return text


def shorten_text(text: str, limit: int = 200) -> str:
    """A message part cut to about ``limit`` characters with ``… (len=N)``."""
    return text if len(text) <= limit else text[:limit] + f"… (len={len(text)})"


class _GcClock:
    """CPU seconds the garbage collector has spent, so far, in all threads.

    A full collection in a large process (a long service run, a test session) can take longer
    than a formula's whole budget; it is the process's work, not the formula's, so the budget
    leaves it out.
    """

    spent = 0.0
    _started: dict[int, float] = {}

    @classmethod
    def callback(cls, phase: str, info: dict[str, int]) -> None:
        key = info.get("generation", 0)
        if phase == "start":
            cls._started[key] = time.thread_time()
        elif key in cls._started:
            cls.spent += time.thread_time() - cls._started.pop(key)


if _GcClock.callback not in gc.callbacks:
    gc.callbacks.append(_GcClock.callback)


class Budget:
    """The step and time budget of one evaluation.

    Time is the CPU time of the evaluating thread (``time.thread_time``), so a machine
    busy with other work does not fail a formula that is itself quick.  Reading the
    thread clock costs ten times the monotonic one, so the monotonic clock runs ahead as a
    cheap alarm: only when it passes the deadline is the CPU time read, and the alarm moved
    on by what is left of the budget.
    """

    __slots__ = ("steps", "max_steps", "deadline", "max_seconds", "_cpu_start", "_gc_start")

    def __init__(self, limits: Limits) -> None:
        self.steps = 0
        self.max_steps = limits.max_steps
        self.max_seconds = limits.max_seconds
        self.deadline = time.monotonic() + limits.max_seconds
        self._cpu_start = time.thread_time()
        self._gc_start = _GcClock.spent

    def tick(self) -> None:
        """Count one loop step; raise when the step or time budget is spent."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise StepLimitError(f"step limit exceeded: more than {self.max_steps} loop "
                                 "iterations")
        if time.monotonic() > self.deadline:
            self.late()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            self.late()

    def late(self) -> None:
        """The alarm rang: raise if the evaluation's CPU time is over the budget, else re-arm."""
        gc_time = _GcClock.spent - self._gc_start
        left = self.max_seconds - (time.thread_time() - self._cpu_start - gc_time)
        if left > 0:
            self.deadline = time.monotonic() + left
            return
        raise TimeLimitError(f"time limit exceeded: evaluation took longer than "
                             f"{self.max_seconds}s")


# %[(key)][flags][width][.precision]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?([a-zA-Z%])")


class Guards:
    """Sized versions of the operators, methods and built-ins, bound to one :class:`Limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = L = limits

        def size_check(kind: type, n: int) -> None:
            if kind is str or kind is bytes:
                if n > L.max_string:
                    raise SizeLimitError(f"string too long: {n} characters would exceed "
                                         f"the limit {L.max_string}")
            elif n > L.max_sequence:
                raise SizeLimitError(f"sequence too long: {n} items would exceed the "
                                     f"limit {L.max_sequence}")

        self.size_check = size_check

        def int_check(bits: int) -> None:
            if bits > L.max_int_bits:
                raise NumberLimitError(f"number too large: about {bits} bits would exceed "
                                       f"the limit {L.max_int_bits}")

        measure = self.measure

        def add(a: Any, b: Any) -> Any:
            ta = type(a)
            if ta is str or ta is list or ta is tuple:
                if type(b) is ta:
                    size_check(ta, len(a) + len(b))
            return a + b

        def mul(a: Any, b: Any) -> Any:
            ta, tb = type(a), type(b)
            if ta is int and tb is int:
                int_check(a.bit_length() + b.bit_length())
            elif ta in (str, list, tuple) and tb in (int, bool):
                size_check(ta, len(a) * max(b, 0))
            elif tb in (str, list, tuple) and ta in (int, bool):
                size_check(tb, len(b) * max(a, 0))
            return a * b

        def pow_(a: Any, b: Any) -> Any:
            if isinstance(b, (int, float, Decimal)):
                if b > L.max_exponent or b < -L.max_exponent:
                    raise NumberLimitError(f"exponent {shorten(b)} is above the limit "
                                           f"{L.max_exponent}")
                if isinstance(a, int) and isinstance(b, int) and b > 0:
                    int_check(max(a.bit_length(), 1) * b)
            return a**b

        def lshift(a: Any, b: Any) -> Any:
            if isinstance(a, int) and isinstance(b, int):
                int_check(a.bit_length() + max(b, 0))
            return a << b

        def mod(a: Any, b: Any) -> Any:
            if type(a) is str:
                numeric = False
                for m in _PRINTF.finditer(a):
                    if m.group(1) == "*" or m.group(2) == "*":
                        raise SizeLimitError("'*' widths in % formatting are not allowed")
                    for part in m.groups()[:2]:
                        if part and int(part) > L.max_format_width:
                            raise SizeLimitError(f"% format width {part} is above the "
                                                 f"limit {L.max_format_width}")
                    numeric = numeric or m.group(3) in "dioxXuc"
                args = b.values() if type(b) is dict else (b if type(b) is tuple else (b,))
                for arg in args:
                    self.text_check(arg)
                    if numeric and type(arg) is Decimal:
                        self.decimal_check(arg)
            return a % b

        self.binops: dict[type, Callable[[Any, Any], Any]] = {}
        import ast

        for op, fn in ((ast.Add, add), (ast.Sub, operator.sub), (ast.Mult, mul),
                       (ast.Div, operator.truediv), (ast.FloorDiv, operator.floordiv),
                       (ast.Mod, mod), (ast.Pow, pow_), (ast.LShift, lshift),
                       (ast.RShift, operator.rshift), (ast.BitOr, operator.or_),
                       (ast.BitXor, operator.xor), (ast.BitAnd, operator.and_)):
            self.binops[op] = fn

        def contains(a: Any, b: Any) -> bool:
            tb = type(b)
            if tb is dict or tb is set or tb is frozenset:
                if type(a) is tuple:
                    measure(a)
            elif tb is list or tb is tuple:
                if type(a) in _CONTAINER_TYPES or any(type(x) in _CONTAINER_TYPES for x in b):
                    measure(b, a)
            return a in b

        def compared(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def cmp(a: Any, b: Any) -> Any:
                if type(a) in _CONTAINER_TYPES or type(b) in _CONTAINER_TYPES:
                    measure(a, b)
                return fn(a, b)

            return cmp

        self.compares: dict[type, Callable[[Any, Any], Any]] = {
            ast.Eq: compared(operator.eq), ast.NotEq: compared(operator.ne),
            ast.Lt: compared(operator.lt), ast.LtE: compared(operator.le),
            ast.Gt: compared(operator.gt), ast.GtE: compared(operator.ge),
            ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: contains, ast.NotIn: lambda a, b: not contains(a, b),
        }

    # ------------------------------------------------------------------ value costs
    def measure(self, *values: Any) -> int:
        """Walk ``values`` as C code would (shared sub-values once per occurrence).

        Returns an estimate of the characters ``str()`` would produce.  Raises F203 above
        ``max_items`` elements and F205 deeper than ``max_data_depth``; the walk itself stops
        at those bounds, so it is bounded too.
        """
        L = self.limits
        max_items, max_depth = L.max_items, L.max_data_depth
        count = 0
        chars = 0
        stack: list[tuple[Any, int]] = [(v, 1) for v in values]
        pop, push = stack.pop, stack.append
        while stack:
            value, depth = pop()
            t = type(value)
            if t is str:
                chars += len(value) + 4
            elif t is dict:
                if depth > max_depth:
                    self._too_deep()
                count += len(value)
                if count > max_items:
                    self._too_many()
                chars += 2 + 4 * len(value)
                for k, v in value.items():
                    push((k, depth + 1))
                    push((v, depth + 1))
            # The dict branch's checks again, inline: this loop walks every formula result (hot path).
            elif t in _CONTAINER_TYPES:
                if depth > max_depth:
                    self._too_deep()
                count += len(value)
                if count > max_items:
                    self._too_many()
                chars += 2 + 2 * len(value)
                for v in value:
                    push((v, depth + 1))
            elif t is int:
                chars += value.bit_length() // 3 + 2
            elif t is Decimal:
                chars += len(value.as_tuple().digits) + 8
            else:
                chars += 24
            count += 1
            if count > max_items:
                self._too_many()
        return chars

    def _too_many(self) -> None:
        raise SizeLimitError(f"value too large: more than {self.limits.max_items} elements "
                             "to compare, hash or convert")

    def _too_deep(self) -> None:
        raise FormulaDepthError(f"value nested too deeply: more than "
                                f"{self.limits.max_data_depth} levels")

    def text_check(self, value: Any) -> None:
        """Refuse to turn ``value`` into text when the text would be too long."""
        t = type(value)
        if t in _CONTAINER_TYPES:
            n = self.measure(value)
            if n > self.limits.max_string:
                raise SizeLimitError(f"string too long: about {n} characters would exceed "
                                     f"the limit {self.limits.max_string}")

    def key_check(self, key: Any) -> None:
        """Hashing a tuple walks it: measure it first."""
        if type(key) is tuple:
            self.measure(key)

    def decimal_check(self, value: Decimal) -> None:
        """Refuse a Decimal whose integer or fixed-point form has too many digits."""
        if value.is_finite():
            digits = abs(value.adjusted()) + len(value.as_tuple().digits)
            if digits > self.limits.max_digits:
                raise NumberLimitError(f"number too large: {shorten(value)} has about {digits} "
                                       f"digits; the limit is {self.limits.max_digits}")

    def format_value(self, value: Any, spec: str) -> str:
        L = self.limits
        if spec:
            why = check_format_spec(spec, L.max_format_width)
            if why:
                raise SizeLimitError(why)
            if type(value) is Decimal:
                self.decimal_check(value)
        self.text_check(value)
        return format(value, spec)

    def materialise(self, items: Any) -> Any:
        """A sized iterable as it is; an iterator as a list of at most ``max_sequence`` items."""
        if hasattr(items, "__len__"):
            self.size_check(list, len(items))
            return items
        out = list(islice(items, self.limits.max_sequence + 1))
        self.size_check(list, len(out))
        return out

    def call_method(self, obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``obj.name(*args, **kwargs)`` if ``name`` is a safe method of obj's base type.

        The method is taken from the base type (``str``, ``dict``, ...), never from ``obj``,
        so a subclass cannot substitute its own.
        """
        base: type[Any]
        if isinstance(obj, str):
            base, allowed = str, STR_METHODS
        elif isinstance(obj, dict):
            base, allowed = dict, DICT_METHODS
        elif isinstance(obj, list):
            base, allowed = list, LIST_METHODS
        elif isinstance(obj, tuple):
            base, allowed = tuple, TUPLE_METHODS
        elif isinstance(obj, (set, frozenset)):
            base, allowed = (set if isinstance(obj, set) else frozenset), SET_METHODS
        else:
            raise DisallowedMethodError(f"'{type(obj).__name__}' value has no allowed method '.{name}()'")
        method = getattr(base, name, None)
        if name not in allowed or method is None:
            raise DisallowedMethodError(f"'{base.__name__}' value has no allowed method '.{name}()'")
        check = _METHOD_CHECKS.get(name)
        if check is not None:
            args = check(self, obj, args, kwargs) or args
        return method(obj, *args, **kwargs)


def _check_pad(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = args[0] if args else kwargs.get("width", 0)
    if isinstance(width, int):
        g.size_check(str, width)


def _check_replace(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = obj.count(old) if old else len(obj) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        g.size_check(str, len(obj) + count * (len(new) - len(old)))


def _check_join(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    if isinstance(obj, str) and args:
        items = g.materialise(args[0])
        total = len(obj) * max(len(items) - 1, 0)
        g.size_check(str, total)
        for item in items:
            total += len(item) if isinstance(item, str) else 0
        g.size_check(str, total)
        return (items, *args[1:])
    return None


def _check_split(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if isinstance(obj, str):
        sep = args[0] if args else kwargs.get("sep")
        limit = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
        parts = (obj.count(sep) if isinstance(sep, str) and sep else len(obj) // 2) + 1
        if isinstance(limit, int) and limit >= 0:
            parts = min(parts, limit + 1)
        g.size_check(list, parts)


def _check_extend(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    if not args:
        g.size_check(list, len(obj) + len(kwargs))
        return None
    items = g.materialise(args[0])
    g.size_check(list, len(obj) + len(items) + len(kwargs))
    if not isinstance(obj, list):  # dict.update / set.union hash what they add
        g.measure(items)
    return (items, *args[1:])


def _check_one_more(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    g.size_check(list, len(obj) + 1)
    if args and not isinstance(obj, list):
        g.key_check(args[0])


def _check_key(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if args and isinstance(obj, (dict, set, frozenset)):
        g.key_check(args[0])


def _check_compare_all(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not isinstance(obj, str):
        g.measure(obj, *args)


def _check_sets(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = tuple(g.materialise(a) for a in args)
    g.measure(*items)
    return items


_METHOD_CHECKS: dict[str, Callable[[Guards, Any, tuple[Any, ...], dict[str, Any]], Any]] = {
    "ljust": _check_pad, "rjust": _check_pad, "center": _check_pad, "zfill": _check_pad,
    "replace": _check_replace, "join": _check_join, "split": _check_split, "rsplit": _check_split,
    "extend": _check_extend, "update": _check_extend,
    "append": _check_one_more, "insert": _check_one_more, "add": _check_one_more,
    "setdefault": _check_one_more, "get": _check_key, "pop": _check_key,
    "index": _check_compare_all, "count": _check_compare_all, "remove": _check_compare_all,
    "sort": _check_compare_all,
    "union": _check_sets, "intersection": _check_sets, "difference": _check_sets,
    "issubset": _check_sets, "issuperset": _check_sets,
}


def make_builtins(guards: Guards) -> dict[str, Callable[..., Any]]:
    """The safe built-in functions every formula may call, sized by ``guards``' limits."""
    g = guards
    L = guards.limits

    def range_(*args: int) -> range:
        r = range(*args)
        g.size_check(list, len(r))
        return r

    def sized(fn: Callable[..., Any], *, walk: bool = False) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(g.materialise(a) if not isinstance(a, (str, int, float, Decimal)) else a
                         for a in args)
            for a in args:
                if isinstance(a, str):
                    g.size_check(list, len(a))
            if walk:
                g.measure(*args)
            return fn(*args, **kwargs)

        call.__name__ = fn.__name__
        call.__doc__ = fn.__doc__
        return call

    def sum_(items: Any, start: Any = 0) -> Any:
        if not isinstance(start, (int, float, Decimal)):
            raise DisallowedMethodError("sum() only adds numbers")
        return sum(g.materialise(items), start)

    def str_(value: Any = "") -> str:
        g.text_check(value)
        if type(value) is Decimal:
            pass  # str() of a Decimal uses an exponent: short whatever its size
        return str(value)

    def int_(value: Any = 0, *base: Any) -> int:
        if type(value) is Decimal:
            g.decimal_check(value)
        return int(value, *base)

    def round_(value: Any, ndigits: Any = None) -> Any:
        if ndigits is not None:
            if isinstance(ndigits, int) and abs(ndigits) > L.max_digits:
                raise NumberLimitError(f"round() ndigits {shorten(ndigits)} is beyond the "
                                       f"limit {L.max_digits}")
            return round(value, ndigits)
        if type(value) is Decimal:
            g.decimal_check(value)
        return round(value)

    def minmax(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) == 1:
                args = (g.materialise(args[0]),)
            g.measure(*args)
            return fn(*args, **kwargs)

        call.__name__ = fn.__name__
        return call

    return {
        "len": len, "str": str_, "int": int_, "float": float, "bool": bool, "round": round_,
        "abs": abs, "min": minmax(min), "max": minmax(max), "any": sized(any), "all": sized(all),
        "sum": sum_, "range": range_, "sorted": sized(sorted, walk=True), "list": sized(list),
        "tuple": sized(tuple), "dict": sized(dict, walk=True), "set": sized(set, walk=True),
        "enumerate": sized(enumerate), "zip": sized(zip), "reversed": sized(reversed),
        "Decimal": Decimal,
    }


def plain_copy(value: Any, max_depth: int = 100, depth: int = 0) -> Any:
    """A deep copy of JSON-like data as plain dict/list/tuple/set; other values as they are.

    Raises F205 for data nested deeper than ``max_depth``.
    """
    t = type(value)
    if t in _CONTAINER_TYPES or isinstance(value, CONTAINERS):
        if depth >= max_depth:
            raise FormulaDepthError(f"value nested too deeply: more than {max_depth} levels")
        d = depth + 1
        if isinstance(value, dict):
            return {k: plain_copy(v, max_depth, d) for k, v in value.items()}
        if isinstance(value, list):
            return [plain_copy(v, max_depth, d) for v in value]
        if isinstance(value, tuple):
            return tuple(plain_copy(v, max_depth, d) for v in value)
        return {plain_copy(v, max_depth, d) for v in value}
    return value


