"""Request field specs: one declaration per field says how it is checked, what a bad
value is called, and which command field it fills. Two readers follow from it.

``CommandSpec.read`` walks the spec in order and raises FieldViolation naming the
first bad field by its path (``purchase.lines[2].quantity``) with the message clients
see. ``CommandSpec.check`` is the same spec compiled once, at import, into the source
of one plain function that accepts exactly what ``read`` accepts and builds the same
command, with no path built and no exception raised: None for anything else, and
``read`` then names the bad field. A Batch carries up to BATCH_ITEMS_MAX items, so
per-item overhead dominates its cost; one generated function with every condition
inline costs what a hand-written checker does, where walking the spec per item costs
two to four times as much. The generated source is kept (``CommandSpec.source``)
to read and debug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from loyalty.actors.ledger.currency import is_currency_code
from loyalty.actors.ledger.limits import ID_LENGTH_MAX, LABEL_LENGTH_MAX
from loyalty.server.errors import FieldViolation
from loyalty.server.limits import TIMESTAMP_MS_MAX

# ------------------------------------------------------------------- field kinds
#
# Each kind reads itself from a message (``read_into``: the checked value goes into
# ``values`` under its command field, ``into``, which defaults to the field's name)
# and writes its part of a compiled check (``compile_into``).


class Identifier(msgspec.Struct, frozen=True):
    """A client-chosen id: 1 to ID_LENGTH_MAX printable characters, no whitespace."""

    name: str
    optional: bool = False
    """Empty is allowed (and stays empty)."""
    into: str = ""

    def check(self, path: str, value: str) -> str:
        if not value:
            if self.optional:
                return value
            raise FieldViolation(path, "is required")
        if len(value) > ID_LENGTH_MAX:
            raise FieldViolation(path, f"must be at most {ID_LENGTH_MAX} characters")
        # isprintable() is False for every whitespace character except the ASCII space.
        if not value.isprintable() or " " in value:
            raise FieldViolation(path, "must be printable characters without spaces")
        return value

    def read_into(self, values: dict, message, prefix: str) -> None:
        values[self.into or self.name] = self.check(prefix + self.name, getattr(message, self.name))

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        test = f'len({local}) <= {ID_LENGTH_MAX} and {local}.isprintable() and " " not in {local}'
        source.require(f"(not {local} or ({test}))" if self.optional else f"0 < {test}")
        source.values[self.into or self.name] = local


class Text(msgspec.Struct, frozen=True):
    """A label or free text: printable characters, at most ``length_max`` of them."""

    name: str
    required: bool = False
    length_max: int = LABEL_LENGTH_MAX
    into: str = ""

    def check(self, path: str, value: str) -> str:
        if self.required and not value:
            raise FieldViolation(path, "is required")
        if len(value) > self.length_max:
            raise FieldViolation(path, f"must be at most {self.length_max} characters")
        if not value.isprintable():
            raise FieldViolation(path, "must be printable characters")
        return value

    def read_into(self, values: dict, message, prefix: str) -> None:
        values[self.into or self.name] = self.check(prefix + self.name, getattr(message, self.name))

    def condition(self, local: str) -> str:
        low = "0 < " if self.required else ""
        return f"{low}len({local}) <= {self.length_max} and {local}.isprintable()"

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        source.require(self.condition(local))
        source.values[self.into or self.name] = local


class Integer(msgspec.Struct, frozen=True):
    """An integer between ``low`` and ``high`` inclusive (and not 0 when ``nonzero``)."""

    name: str
    low: int
    high: int
    nonzero: bool = False
    into: str = ""

    def check(self, path: str, value: int) -> int:
        if not self.low <= value <= self.high:
            raise FieldViolation(path, f"must be between {self.low} and {self.high}, got {value}")
        if self.nonzero and not value:
            raise FieldViolation(path, "must not be 0")
        return value

    def read_into(self, values: dict, message, prefix: str) -> None:
        values[self.into or self.name] = self.check(prefix + self.name, getattr(message, self.name))

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        source.require(f"{self.low} <= {local} <= {self.high}" + (f" and {local}" if self.nonzero else ""))
        source.values[self.into or self.name] = local


_currencies_seen: set[str] = set()
"""Currency codes found valid (at most 26**3: every code is three letters), so the
compiled checks test most codes with one set lookup."""


def _is_new_currency(code: str) -> bool:
    if not is_currency_code(code):
        return False
    _currencies_seen.add(code)
    return True


class Currency(msgspec.Struct, frozen=True):
    """An ISO-4217 currency code: three upper-case ASCII letters."""

    name: str
    into: str = ""

    def check(self, path: str, value: str) -> str:
        if not is_currency_code(value):
            raise FieldViolation(path, "must be an ISO-4217 code such as EUR")
        return value

    def read_into(self, values: dict, message, prefix: str) -> None:
        values[self.into or self.name] = self.check(prefix + self.name, getattr(message, self.name))

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        seen, is_new = source.refer(_currencies_seen, "currencies_seen"), source.refer(_is_new_currency, "is_new_currency")
        source.require(f"({local} in {seen} or {is_new}({local}))")
        source.values[self.into or self.name] = local


class Timestamp(msgspec.Struct, frozen=True):
    """An optional google.protobuf.Timestamp as epoch milliseconds (0 when unset),
    between the epoch and TIMESTAMP_MS_MAX."""

    name: str
    into: str = ""

    def read_into(self, values: dict, message, prefix: str) -> None:
        milliseconds = 0
        if message.HasField(self.name):
            timestamp = getattr(message, self.name)
            milliseconds = timestamp.seconds * 1000 + timestamp.nanos // 1_000_000
            if not 0 <= milliseconds <= TIMESTAMP_MS_MAX:
                raise FieldViolation(prefix + self.name, f"must be between 0 and {TIMESTAMP_MS_MAX}, got {milliseconds}")
        values[self.into or self.name] = milliseconds

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.statements += [
            f"{local} = 0",
            f'if {parent}.HasField("{self.name}"):',
            f"    {local}_time = {parent}.{self.name}",
            f"    {local} = {local}_time.seconds * 1000 + {local}_time.nanos // 1000000",
            f"    if not 0 <= {local} <= {TIMESTAMP_MS_MAX}:",
            "        return None",
        ]
        source.values[self.into or self.name] = local


class Map(msgspec.Struct, frozen=True):
    """A map<string, string> of labels: at most ``count_max`` entries, keys 1 to
    ``key_length_max`` printable characters, values up to ``value_length_max``. The
    command gets it sorted by key; a bad entry is named ``<field>['<key>']``."""

    name: str
    count_max: int
    key_length_max: int
    value_length_max: int
    noun: str
    """What one entry is called in messages ("attribute")."""
    into: str = ""

    def read_into(self, values: dict, message, prefix: str) -> None:
        entries, path = getattr(message, self.name), prefix + self.name
        if len(entries) > self.count_max:
            raise FieldViolation(path, f"at most {self.count_max} {self.noun}s")
        key_text = Text("", required=True, length_max=self.key_length_max)
        value_text = Text("", length_max=self.value_length_max)
        checked = {}
        for key, value in sorted(entries.items()):
            key_text.check(f"{path}[{key!r}]", key)
            checked[key] = value_text.check(f"{path}[{key!r}]", value)
        values[self.into or self.name] = checked

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        key_test = Text("", required=True, length_max=self.key_length_max).condition(f"{local}_key")
        value_test = Text("", length_max=self.value_length_max).condition(f"{local}_value")
        source.bind(local, f"{parent}.{self.name}")
        source.statements += [
            f"if {local}:",
            f"    if len({local}) > {self.count_max}:",
            "        return None",
            f"    {local}_checked = dict(sorted({local}.items()))",
            f"    for {local}_key, {local}_value in {local}_checked.items():",
            f"        if not ({key_test} and {value_test}):",
            "            return None",
            "else:",
            f"    {local}_checked = {{}}",
        ]
        source.values[self.into or self.name] = f"{local}_checked"


class Repeated(msgspec.Struct, frozen=True):
    """A repeated message of scalar fields, each element becoming one ``item`` (a
    command's line type): at most ``count_max`` of them, at least one when
    ``required``. A bad element's field is named ``<field>[<index>].<name>``."""

    name: str
    item: type
    fields: tuple
    count_max: int
    noun: str
    """What one element is called in messages ("line")."""
    required: bool = False
    into: str = ""

    def read_into(self, values: dict, message, prefix: str) -> None:
        elements, path = getattr(message, self.name), prefix + self.name
        if self.required and not elements:
            raise FieldViolation(path, f"at least one {self.noun} is required")
        if len(elements) > self.count_max:
            raise FieldViolation(path, f"at most {self.count_max} {self.noun}s")
        checked = []
        for index, element in enumerate(elements):
            element_values: dict = {}
            for field in self.fields:
                field.read_into(element_values, element, f"{path}[{index}].")
            checked.append(self.item(**element_values))
        values[self.into or self.name] = tuple(checked)

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        source.require(f"{'0 < ' if self.required else ''}len({local}) <= {self.count_max}")
        element = _Source(source.namespace)
        for field in self.fields:
            field.compile_into(element, f"{local}_element", f"{local}_{field.name}")
        if element.statements:
            raise TypeError(f"{self.name}: the fields of repeated elements must be scalars")
        item = source.refer(self.item, self.item.__name__)
        source.statements += [
            f"{local}_checked = []",
            f"for {local}_element in {local}:",
            *(f"    {line}" for line in element.binds),
            f"    if not ({element.condition()}):",
            "        return None",
            f"    {local}_checked.append({item}({element.arguments(self.item)}))",
        ]
        source.values[self.into or self.name] = f"tuple({local}_checked)"


class Message(msgspec.Struct, frozen=True):
    """A sub-message whose fields fill command fields directly (a purchase fills an
    earn's currency, lines, ...); named ``<field>`` when required and unset, and its
    fields ``<field>.<name>``."""

    name: str
    fields: tuple
    required: bool = True

    def read_into(self, values: dict, message, prefix: str) -> None:
        if self.required and not message.HasField(self.name):
            raise FieldViolation(prefix + self.name, "is required")
        inner = getattr(message, self.name)
        for field in self.fields:
            field.read_into(values, inner, f"{prefix}{self.name}.")

    def compile_into(self, source: _Source, parent: str, local: str) -> None:
        source.bind(local, f"{parent}.{self.name}")
        # An unset message reads as an empty one, so a required non-empty repeated
        # field inside already proves it is set: no HasField call needed.
        if self.required and not any(isinstance(field, Repeated) and field.required for field in self.fields):
            source.require(f'{parent}.HasField("{self.name}")')
        for field in self.fields:
            field.compile_into(source, local, f"{local}_{field.name}")


# ------------------------------------------------------------------- commands


class _Source:
    """The parts of one generated check: local bindings, the conditions every value
    must meet, statements for the fields that need more than a condition, the command
    fields' values, and the objects the code refers to."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.binds: list[str] = []
        self.conditions: list[str] = []
        self.statements: list[str] = []
        self.values: dict[str, str] = {}
        """Command field -> the expression of its checked value."""

    def bind(self, local: str, expression: str) -> None:
        self.binds.append(f"{local} = {expression}")

    def require(self, condition: str) -> None:
        self.conditions.append(condition)

    def refer(self, target: object, name: str) -> str:
        """The name under which the generated code reaches ``target``."""
        known = self.namespace.setdefault(f"_{name}", target)
        if known is not target:
            raise ValueError(f"two objects named {name} in one check")
        return f"_{name}"

    def condition(self) -> str:
        return "\n        and ".join(f"({condition})" for condition in self.conditions) or "True"

    def arguments(self, struct: type) -> str:
        """The values in the order of ``struct``'s fields, every one of which the spec
        must give (and no other)."""
        fields = struct.__struct_fields__
        if set(fields) != set(self.values):
            raise ValueError(f"{struct.__name__}: the spec gives {sorted(self.values)}, the command has {fields}")
        return ", ".join(self.values[field] for field in fields)


class CommandSpec:
    """One request's fields, in the order they are checked (the first bad one is
    named), and the command they build."""

    def __init__(self, command: type, fields: tuple) -> None:
        self.command = command
        self.fields = fields
        self.source, namespace = _generate_check(command, fields)
        """The Python source of ``check``."""
        exec(compile(self.source, f"<check of {command.__name__}>", "exec"), namespace)  # noqa: S102 - our own spec
        self.check: Callable[[Any], Any] = namespace["check"]
        """The request's command, or None when any field is bad (``read`` names it)."""

    def read(self, request, prefix: str = "") -> Any:
        """The request's command; FieldViolation (its path under ``prefix``) for the
        first bad field."""
        values: dict = {}
        for field in self.fields:
            field.read_into(values, request, prefix)
        return self.command(**values)


def _generate_check(command: type, fields: tuple) -> tuple[str, dict[str, Any]]:
    """The source of ``check`` for a spec, and the objects it refers to."""
    source = _Source({})
    for field in fields:
        field.compile_into(source, "request", field.name)
    arguments = source.arguments(command)
    name = source.refer(command, command.__name__)
    lines = [
        "def check(request):",
        *(f"    {line}" for line in source.binds),
        f"    if not ({source.condition()}):",
        "        return None",
        *(f"    {line}" for line in source.statements),
        f"    return {name}({arguments})",
    ]
    return "\n".join(lines) + "\n", source.namespace
