"""Method specs: a registered method's name with option values in one string,
``name:key=value,key=value``, accepted wherever a method name is (``explain(method=...)``,
``loupe explain --method``, ``loupe maps --method``, ``loupe compare --methods``).

Syntax (one clear form, no alternatives)::

    shuffle                                 the method with its defaults
    shuffle:smooth=0.03,n_shuffles=16       options after ':', separated by ','
    shuffle:grids=(2,3,4),jitter=false      a tuple in parentheses: (2,3,4); one element: (4)

A value is read as an int (``16``), a float (``0.03``, ``1e-3``), a bool (``true``/``false``,
any case), None (``none``), a tuple in parentheses (of any of these, nested too), or else a
string (``offset=pad``). Keys may be written with ``-`` for ``_`` (``n-shuffles``). Unknown
methods, unknown options, a repeated key and malformed text are one-line ValueErrors naming
the spec. :func:`format_method_spec` writes the canonical form (keys sorted), which
:func:`parse_method_spec` reads back to the same options; :func:`method_slug` names files and
folders after a spec.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping

from loupe.registry import get_method

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


def split_top_level(text: str, what: str) -> list[str]:
    """``text`` split at the commas outside parentheses; a ValueError (naming ``what``) for
    unbalanced parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{what}: unbalanced ')'")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"{what}: unbalanced '('")
    parts.append(text[start:])
    return parts


def parse_value(text: str) -> object:
    """An option value from text: ``"8"`` -> 8, ``"0.5"`` -> 0.5, ``"true"`` -> True,
    ``"none"`` -> None, ``"(2,3,4)"`` -> (2, 3, 4); ``"2,3"`` -> (2, 3) (the ``--option``
    form); anything else stays a string."""
    text = text.strip()
    if text.startswith("(") or text.endswith(")"):
        if not (text.startswith("(") and text.endswith(")")):
            raise ValueError(f"value {text!r}: a tuple is written in parentheses, e.g. (2,3,4)")
        inner = text[1:-1]
        parts = split_top_level(inner, f"value {text!r}") if inner.strip() else []
        if parts and not parts[-1].strip():
            parts.pop()  # "(4,)"
        return tuple(parse_value(part) for part in parts)
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part.strip() != "")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def format_value(value: object) -> str:
    """The text :func:`parse_value` reads back as ``value`` (ints, floats, bools, None,
    strings, tuples and lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return "(" + ",".join(format_value(v) for v in value) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def method_option_names(name: str) -> list[str] | None:
    """The keyword options of the registered method ``name`` (after its context argument), or
    None when it takes any (``**options``)."""
    names = _keyword_names(get_method(name).function)
    return None if names is None else list(names)


@functools.cache
def _keyword_names(function: Callable[..., object]) -> tuple[str, ...] | None:
    """The keyword options of a method function (cached: ``inspect.signature`` costs tens of
    microseconds, and ``explain`` checks the options on every call)."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def check_method_options(name: str, options: Mapping[str, object], spec: str | None = None
                         ) -> None:
    """A ValueError naming the options that the method ``name`` does not take (and the
    ``spec`` they came from, when given)."""
    known = method_option_names(name)
    if known is None:
        return
    unknown = sorted(set(options) - set(known))
    if unknown:
        where = f"method spec {spec!r}: " if spec else ""
        raise ValueError(
            f"{where}method {name!r} has no option {', '.join(repr(u) for u in unknown)}; "
            f"its options are: {', '.join(known) or 'none'}"
        )


def parse_method_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``"shuffle:smooth=0.03,n_shuffles=16"`` -> ``("shuffle", {"smooth": 0.03,
    "n_shuffles": 16})``, checked against the registry (see the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a method spec must be a non-empty string, got {spec!r}")
    name, colon, rest = spec.strip().partition(":")
    name = name.strip()
    try:
        get_method(name)
    except ValueError as error:
        raise ValueError(f"method spec {spec!r}: {error}" if colon else str(error)) from None
    options: dict[str, object] = {}
    if not colon:
        return name, options
    if not rest.strip():
        raise ValueError(f"method spec {spec!r}: nothing after ':'; write {name}:KEY=VALUE,... "
                         f"or {name} alone")
    for pair in split_top_level(rest, f"method spec {spec!r}"):
        key, equals, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key or not value.strip():
            raise ValueError(f"method spec {spec!r}: {pair.strip()!r} is not KEY=VALUE (a tuple "
                             "is written in parentheses: grids=(2,3,4))")
        if key in options:
            raise ValueError(f"method spec {spec!r}: option {key!r} is given twice")
        try:
            options[key] = parse_value(value)
        except ValueError as error:
            raise ValueError(f"method spec {spec!r}: {error}") from None
    check_method_options(name, options, spec)
    return name, options


def format_method_spec(name: str, options: Mapping[str, object] | None = None) -> str:
    """The canonical spec of a method and its options: ``name`` alone, or
    ``name:key=value,...`` with the keys sorted."""
    if not options:
        return name
    return name + ":" + ",".join(f"{k}={format_value(options[k])}" for k in sorted(options))


def method_slug(name: str, options: Mapping[str, object] | None = None) -> str:
    """A file or folder name for a method and its options: ``name`` alone, or
    ``name.key=value...`` with the keys sorted, tuples as ``2x3x4`` and any character other
    than letters, digits and ``_.=+-`` as ``_`` (``shuffle.n_shuffles=16.smooth=0.03``)."""
    parts = [name]
    for key in sorted(options or {}):
        value = (options or {})[key]
        text = ("x".join(format_value(v) for v in value) if isinstance(value, tuple | list)
                else format_value(value))
        parts.append(f"{key}={text}")
    return _UNSAFE.sub("_", ".".join(parts))


def merge_options(spec: str, spec_options: Mapping[str, object],
                  extra: Mapping[str, object], what: str) -> dict[str, object]:
    """The options of a spec and those given separately (``what``: where they come from, e.g.
    ``"--option"``); a ValueError when both set one."""
    clash = sorted(set(spec_options) & set(extra))
    if clash:
        raise ValueError(f"method spec {spec!r} and {what} both set "
                         f"{', '.join(repr(c) for c in clash)}; give each option once")
    return {**spec_options, **extra}


def resolve_method(spec: str, options: Mapping[str, object], what: str
                   ) -> tuple[str, dict[str, object]]:
    """The method name of ``spec`` and its options merged with ``options`` (given separately,
    ``what`` says where: ``"--option"``), all checked against the method's parameters."""
    name, spec_options = parse_method_spec(spec)
    check_method_options(name, options)
    return name, merge_options(spec, spec_options, options, what)
