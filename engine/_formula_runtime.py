"""Run-time guards shared by both formula back ends: limits, step budget, sized operations.

Every operation that can make something much bigger than its inputs (``*``, ``**``, ``<<``,
``+`` on strings/lists, ``%`` formatting, padding and ``replace``/``join`` methods, ``range``)
checks the size of its result BEFORE computing it and raises
:class:`~engine.errors.FormulaLimitError`.  Everything else grows at most linearly per step,
and steps are bounded by :attr:`Limits.max_steps` and :attr:`Limits.max_seconds`.

Limit codes: F201 time, F202 steps, F203 string/sequence size, F204 number size.
"""

from __future__ import annotations

import operator
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from engine._formula_check import (
    DICT_METHODS,
    LIST_METHODS,
    SET_METHODS,
    STR_METHODS,
    TUPLE_METHODS,
    check_format_spec,
)
from engine.errors import FormulaLimitError, FormulaRuntimeError


@dataclass(frozen=True)
class Limits:
    """Per-evaluation limits of one :class:`~engine.formula.FormulaEngine`.

    Attributes:
        max_seconds: wall time per evaluation, checked between loop steps.
        max_steps: loop iterations (for, while, comprehension items) per evaluation.
        max_string: characters in any string a formula produces.
        max_sequence: items in any list/tuple/dict/set a formula produces (and ``range`` length).
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
    max_exponent: int = 10_000
    max_int_bits: int = 10_000
    max_source: int = 10_000
    max_depth: int = 60
    max_format_width: int = 1_000


def limit_error(code: str, message: str) -> FormulaLimitError:
    return FormulaLimitError(message, code=code)


class Budget:
    """The step and time budget of one evaluation (created only for formulas that loop)."""

    __slots__ = ("steps", "max_steps", "deadline", "max_seconds")

    def __init__(self, limits: Limits) -> None:
        self.steps = 0
        self.max_steps = limits.max_steps
        self.max_seconds = limits.max_seconds
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self) -> None:
        """Count one loop step; raise when the step or time budget is spent."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise limit_error("F202", f"step limit exceeded: more than {self.max_steps} loop "
                                      "iterations")
        if not self.steps & 31 and time.monotonic() > self.deadline:
            raise limit_error("F201", f"time limit exceeded: evaluation took longer than "
                                      f"{self.max_seconds}s")


class Guards:
    """Sized versions of the operators and methods, bound to one :class:`Limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        L = limits

        def size_check(kind: type, n: int) -> None:
            if kind is str or kind is bytes:
                if n > L.max_string:
                    raise limit_error("F203", f"string too long: {n} characters would exceed "
                                              f"the limit {L.max_string}")
            elif n > L.max_sequence:
                raise limit_error("F203", f"sequence too long: {n} items would exceed the "
                                          f"limit {L.max_sequence}")

        self.size_check = size_check

        def int_check(bits: int) -> None:
            if bits > L.max_int_bits:
                raise limit_error("F204", f"number too large: about {bits} bits would exceed "
                                          f"the limit {L.max_int_bits}")

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
                if abs(b) > L.max_exponent:
                    raise limit_error("F204", f"exponent {b} is above the limit "
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
                for m in _PRINTF.finditer(a):
                    if m.group(1) == "*" or m.group(2) == "*":
                        raise limit_error("F203", "'*' widths in % formatting are not allowed")
                    for part in m.groups():
                        if part and int(part) > L.max_format_width:
                            raise limit_error("F203", f"% format width {part} is above the "
                                                      f"limit {L.max_format_width}")
            return a % b

        self.binops: dict[str, Callable[[Any, Any], Any]] = {
            "Add": add, "Sub": operator.sub, "Mult": mul, "Div": operator.truediv,
            "FloorDiv": operator.floordiv, "Mod": mod, "Pow": pow_, "LShift": lshift,
            "RShift": operator.rshift, "BitOr": operator.or_, "BitXor": operator.xor,
            "BitAnd": operator.and_,
        }

        def format_value(value: Any, spec: str) -> str:
            why = check_format_spec(spec, L.max_format_width) if spec else None
            if why:
                raise limit_error("F203", why)
            return format(value, spec)

        self.format_value = format_value

    def call_method(self, obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``obj.name(*args, **kwargs)`` if ``name`` is a safe method of obj's base type.

        The method is taken from the base type (``str``, ``dict``, ...), never from ``obj``,
        so a subclass cannot substitute its own.
        """
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
            raise FormulaRuntimeError(f"'{type(obj).__name__}' value has no allowed method "
                                      f"'.{name}()'", code="F101")
        method = getattr(base, name, None)
        if name not in allowed or method is None:
            raise FormulaRuntimeError(f"'{base.__name__}' value has no allowed method "
                                      f"'.{name}()'", code="F101")
        check = _METHOD_CHECKS.get(name)
        if check is not None:
            check(self, obj, args, kwargs)
        return method(obj, *args, **kwargs)


# %[(key)][flags][width][.precision]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


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


def _check_join(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if isinstance(obj, str) and args and hasattr(args[0], "__len__"):
        items = args[0]
        g.size_check(list, len(items))
        total = len(obj) * max(len(items) - 1, 0)
        for item in items:
            total += len(item) if isinstance(item, str) else 0
        g.size_check(str, total)


def _check_extend(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    extra = len(args[0]) if args and hasattr(args[0], "__len__") else 0
    g.size_check(list, len(obj) + extra + len(kwargs))


def _check_one_more(g: Guards, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    g.size_check(list, len(obj) + 1)


_METHOD_CHECKS: dict[str, Callable[[Guards, Any, tuple[Any, ...], dict[str, Any]], None]] = {
    "ljust": _check_pad, "rjust": _check_pad, "center": _check_pad, "zfill": _check_pad,
    "replace": _check_replace, "join": _check_join,
    "extend": _check_extend, "update": _check_extend, "union": _check_extend,
    "append": _check_one_more, "insert": _check_one_more, "add": _check_one_more,
    "setdefault": _check_one_more,
}


def make_builtins(limits: Limits) -> dict[str, Callable[..., Any]]:
    """The safe built-in functions every formula may call, sized by ``limits``."""
    L = limits

    def _sized(n: int) -> None:
        if n > L.max_sequence:
            raise limit_error("F203", f"sequence too long: {n} items would exceed the limit "
                                      f"{L.max_sequence}")

    def _arg_len(args: tuple[Any, ...]) -> None:
        for a in args:
            if hasattr(a, "__len__"):
                _sized(len(a))

    def range_(*args: int) -> range:
        r = range(*args)
        _sized(len(r))
        return r

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def sized(*args: Any, **kwargs: Any) -> Any:
            _arg_len(args)
            return fn(*args, **kwargs)

        sized.__name__ = fn.__name__
        sized.__doc__ = fn.__doc__
        return sized

    def sum_(items: Any, start: Any = 0) -> Any:
        if not isinstance(start, (int, float, Decimal)):
            raise FormulaRuntimeError("sum() only adds numbers", code="F101")
        return sum(items, start)

    def str_(value: Any = "") -> str:
        if isinstance(value, (list, tuple, dict, set)):
            _sized(len(value))
        return str(value)

    return {
        "len": len, "str": str_, "int": int, "float": float, "bool": bool, "round": round,
        "abs": abs, "min": min, "max": max, "any": any, "all": all, "sum": sum_,
        "range": range_, "sorted": wrap(sorted), "list": wrap(list), "tuple": wrap(tuple),
        "dict": wrap(dict), "set": wrap(set), "enumerate": wrap(enumerate), "zip": wrap(zip),
        "reversed": wrap(reversed), "Decimal": Decimal,
    }


def plain_copy(value: Any) -> Any:
    """A deep copy of JSON-like data as plain dict/list/tuple/set; other values as they are."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_copy(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return {plain_copy(v) for v in value}
    return value
