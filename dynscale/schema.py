"""Typed, ranged values: one description checks a value read from a file and parses the same
value given on the command line.

A dataclass is a schema: :func:`check_fields` checks a dict against its fields, each described
by ``field(metadata={"check": Int(1), "help": ...})`` or, without one, by its annotation
(``int``, ``float``, ``str``, ``bool``, ``list[int]``, ``X | None``). :func:`setting` makes such
a field. Every error is a :class:`SchemaError` naming the field.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from dataclasses import dataclass


class SchemaError(ValueError):
    """A value does not match its description; the message starts with where it is."""


class Spec:
    """A description of a value: :meth:`check` a loaded value, :meth:`parse` a typed one."""

    takes = "a value"

    def check(self, value: object, where: str) -> object:
        raise NotImplementedError

    def parse(self, text: str) -> object:
        """The value of command-line text (raises ``ValueError`` with what it takes)."""
        return self.check(text, "")

    def fail(self, value: object, where: str, takes: str | None = None) -> SchemaError:
        return SchemaError(f"{where + ' ' if where else ''}takes {takes or self.takes}, got {value!r}")


@dataclass(frozen=True)
class Int(Spec):
    """A whole number in [low, high] (a bool or 2.0 is not one)."""

    low: int | None = None
    high: int | None = None

    @property
    def takes(self) -> str:
        if self.low is not None and self.high is not None:
            return f"a whole number between {self.low} and {self.high}"
        return "a whole number" + (f" >= {self.low}" if self.low is not None else "")

    def check(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(value, where)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self.fail(value, where)
        return value

    def parse(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise self.fail(text, "") from None
        return self.check(value, "")


@dataclass(frozen=True)
class Num(Spec):
    """A finite number in a range (``low_open``: strictly above ``low``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def takes(self) -> str:
        left = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        right = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        parts = [p for p in (left, right) if p]
        return "a finite number" + (f" {' and '.join(parts)}" if parts else "")

    def check(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(value, where)
        low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if low or high:
            raise self.fail(value, where)
        return float(value)

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise self.fail(text, "") from None
        return self.check(value, "")


@dataclass(frozen=True)
class Str(Spec):
    """A string (non-empty unless ``empty``), one of ``choices`` when given."""

    choices: tuple[str, ...] | None = None
    empty: bool = False

    @property
    def takes(self) -> str:
        return f"one of {', '.join(self.choices)}" if self.choices else "a string" if self.empty else \
            "a non-empty string"

    def check(self, value: object, where: str) -> str:
        blank = not self.empty and not (isinstance(value, str) and value.strip())
        if not isinstance(value, str) or blank or (self.choices and value not in self.choices):
            raise self.fail(value, where)
        return value


@dataclass(frozen=True)
class Bool(Spec):
    takes = "true or false"

    def check(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(value, where)
        return value


@dataclass(frozen=True)
class Anything(Spec):
    def check(self, value: object, where: str) -> object:
        return value


@dataclass(frozen=True)
class Optional(Spec):
    """``spec`` or null."""

    spec: Spec

    @property
    def takes(self) -> str:
        return f"{self.spec.takes} or null"

    def check(self, value: object, where: str) -> object:
        return None if value is None else self.spec.check(value, where)

    def parse(self, text: str) -> object:
        return self.spec.parse(text)


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of ``item`` values, at least ``min_len`` long (exactly ``length`` when given),
    each once with ``unique``; on the command line, comma-separated."""

    item: Spec
    min_len: int = 0
    length: int | None = None
    unique: bool = False

    @property
    def takes(self) -> str:
        size = f"{self.length} " if self.length is not None else ""
        return f"a list of {size}values, each {self.item.takes}"

    def check(self, value: object, where: str) -> list:
        if not isinstance(value, list | tuple):
            raise self.fail(value, where)
        if len(value) < self.min_len or (self.length is not None and len(value) != self.length):
            want = self.length if self.length is not None else f"at least {self.min_len}"
            raise SchemaError(f"{where} takes {want} values, got {len(value)}")
        items = [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if self.unique and len({repr(v) for v in items}) != len(items):
            raise SchemaError(f"{where} lists a value twice, got {list(value)!r}")
        return items

    def parse(self, text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise ValueError(f"takes comma-separated values, each {self.item.takes}, got {text!r}")
        values = []
        for p in parts:
            try:
                values.append(self.item.parse(p))
            except ValueError as e:
                raise ValueError(f"{e} (in {text!r})") from None
        return self.check(values, "")


@dataclass(frozen=True)
class MapOf(Spec):
    """An object with string keys and ``value`` values."""

    value: Spec
    takes = "an object"

    def check(self, value: object, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(value, where)
        return {k: self.value.check(v, f"{where}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class Record(Spec):
    """An object whose keys are a dataclass's fields (see :func:`check_fields`)."""

    cls: type
    takes = "an object"

    def check(self, value: object, where: str) -> dict:
        return check_fields(self.cls, value, where)


def setting(default: object = dataclasses.MISSING, help: str = "", check: Spec | None = None,
            factory: typing.Callable[[], object] | None = None):
    """A dataclass field with its documentation and description (``help``, ``check``)."""
    metadata = {"help": help, **({"check": check} if check is not None else {})}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_SIMPLE = {"int": Int(), "float": Num(), "str": Str(), "bool": Bool()}


def spec_of(field: dataclasses.Field) -> Spec:
    """A field's description: its ``check`` metadata, or one read from its annotation."""
    if "check" in field.metadata:
        return field.metadata["check"]
    return _annotation_spec(field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "object"))


def _annotation_spec(text: str) -> Spec:
    text = text.replace(" ", "")
    options = [p for p in text.split("|") if p != "None"]
    spec: Spec = Anything()
    if len(options) == 1:
        one = options[0]
        if one in _SIMPLE:
            spec = _SIMPLE[one]
        elif m := re.fullmatch(r"(?:list|tuple|Sequence)\[(.+?)(?:,\.\.\.)?\]", one):
            spec = ListOf(_annotation_spec(m.group(1)))
    return Optional(spec) if len(options) < len(text.split("|")) else spec


def field_help(cls: type, name: str) -> str:
    """A field's documentation: its ``help`` metadata, else its line in the class docstring's
    ``Attributes:`` section (``name: text`` or ``a, b, c: text``)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.metadata.get("help"):
        return field.metadata["help"]
    for klass in cls.__mro__:
        doc = inspect.cleandoc(klass.__doc__ or "")
        if "Attributes:" not in doc:
            continue
        found: list[str] | None = None
        entry_indent = 0
        for line in doc.split("Attributes:", 1)[1].splitlines():
            indent = len(line) - len(line.lstrip())
            if found is not None:  # an entry goes on over the lines indented below it
                if line.strip() and indent > entry_indent:
                    found.append(line.strip())
                    continue
                return " ".join(found)
            names, sep, text = line.strip().partition(":")
            if sep and name in [n.strip() for n in names.split(",")]:
                found, entry_indent = [text.strip()], indent
        if found is not None:
            return " ".join(found)
    return ""


def check_fields(cls: type, values: object, where: str, partial: bool = False) -> dict:
    """Checks ``values`` (a dict from a file) against the dataclass ``cls``'s fields: each known
    key's value, and every field without a default present (``partial``: none required).

    Returns:
        The checked values.

    Raises:
        SchemaError: naming ``where.field`` and what it takes.
    """
    if not isinstance(values, dict):
        raise SchemaError(f"{where} takes an object, got {values!r}")
    checked = dict(values)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in values:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and not partial:
                raise SchemaError(f"{where}.{f.name} is missing")
            continue
        checked[f.name] = spec_of(f).check(values[f.name], f"{where}.{f.name}")
    return checked
