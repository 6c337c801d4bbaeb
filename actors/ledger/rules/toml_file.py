"""Rules from a TOML file, with errors that point at the line.

A rules file (or a server config file) holds a top-level ``[[rules]]`` array; other
top-level tables ([program], [[api_keys]], [limits], ...) are ignored here::

    [[rules]]
    rule_id = "double-weekend"
    priority = 10
    schedule.days_of_week = ["sat", "sun"]
    schedule.time_zone = "Europe/Berlin"
    effect.multiplier = "2"

Every problem is reported at once, as "rules.toml: line 12: rules[1].effect.multiplier:
not a decimal number: 'two'". Schedule times are TOML datetimes; one without an offset
is read in the rule's time zone.
"""

from __future__ import annotations

import re
import tomllib

import msgspec

from loyalty.actors.ledger.program import CompiledProgram
from loyalty.actors.ledger.rules.model import Rule
from loyalty.actors.ledger.rules.validation import Violation, validate_rules

_ARRAY_HEADER = re.compile(r"\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_COMPONENT = re.compile(r"\[[^\]]*\]|[^.\[\]]+")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")


class RulesFileError(ValueError):
    """A rules file that cannot be used. The message has one problem per line, each
    starting "<source>: line N: "; ``problems`` holds (line, Violation) pairs."""

    def __init__(self, source: str, problems: list[tuple[int, Violation]]) -> None:
        self.problems = problems
        self.violations = [violation for _, violation in problems]
        super().__init__(
            "\n".join(
                f"{source}: line {line}: {v.path + ': ' if v.path else ''}{v.description}" for line, v in problems
            )
        )


def load_rules_toml(data: bytes, program: CompiledProgram, *, source: str = "rules.toml") -> tuple[Rule, ...]:
    """The validated rules of a TOML document; raises RulesFileError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RulesFileError(source, [(1, Violation("", f"not UTF-8 text: {error}"))]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position else 1
        description = message[: position.start()] if position else message
        raise RulesFileError(source, [(line, Violation("", f"not valid TOML: {description}"))]) from None
    lines = _LineIndex(text)
    raw = document.get("rules", [])
    try:
        rules = msgspec.convert(raw, type=tuple[Rule, ...])
    except msgspec.ValidationError as error:
        message = str(error)
        where = _MSGSPEC_PATH.search(message)
        path = "rules" + (where.group(1) if where else "")
        description = message[: where.start()] if where else message
        unknown = _UNKNOWN_FIELD.search(description)
        line = lines.line_of(f"{path}.{unknown.group(1)}" if unknown else path)
        raise RulesFileError(source, [(line, Violation(path, description))]) from None
    violations = validate_rules(rules, program)
    if violations:
        problems = [(lines.line_of(v.path), v) for v in violations]
        raise RulesFileError(source, sorted(problems, key=lambda problem: problem[0]))
    return rules


class _LineIndex:
    """Where each rule's keys are written: a light scan of the TOML text (headers and
    ``key =`` lines), enough to point a person at the right line."""

    def __init__(self, text: str) -> None:
        self.rule_lines: list[int] = []
        self.keys: list[dict[str, int]] = []
        self.rules_key_line = 1
        rule = -1
        table = ""  # the current table inside a rule, e.g. "schedule.time_windows[1]"
        arrays: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = _ARRAY_HEADER.match(line)
            if header:
                name = _dotted(header.group(1))
                if name == "rules":
                    rule, table, arrays = rule + 1, "", {}
                    self.rule_lines.append(number)
                    self.keys.append({})
                elif name.startswith("rules.") and rule >= 0:
                    inner = name[len("rules.") :]
                    arrays[inner] = arrays.get(inner, -1) + 1
                    table = f"{inner}[{arrays[inner]}]"
                    self.keys[rule].setdefault(table, number)
                else:
                    rule, table = -1, ""
                continue
            header = _TABLE_HEADER.match(line)
            if header:
                name = _dotted(header.group(1))
                if name.startswith("rules.") and rule >= 0:
                    table = name[len("rules.") :]
                    self.keys[rule].setdefault(table, number)
                else:
                    rule, table = -1, ""
                continue
            key = _KEY.match(line)
            if key:
                name = _dotted(key.group(1))
                if rule >= 0:
                    full = f"{table}.{name}" if table else name
                    parts = full.split(".")
                    for end in range(1, len(parts) + 1):  # "effect.multiplier" also places "effect"
                        self.keys[rule].setdefault(".".join(parts[:end]), number)
                elif name == "rules":
                    self.rules_key_line = number

    def line_of(self, path: str) -> int:
        """The line of a path such as "rules[1].effect.multiplier": the key's own line,
        else its nearest enclosing key or table, else the rule's [[rules]] line."""
        parts = _COMPONENT.findall(path)
        if len(parts) < 2 or not parts[1].startswith("[") or not parts[1][1:-1].isdigit():
            return self.rules_key_line
        rule = int(parts[1][1:-1])
        if rule >= len(self.rule_lines):
            return self.rules_key_line
        keys = self.keys[rule]
        rest = parts[2:]
        while rest:
            key = "".join(part if part.startswith("[") else f".{part}" for part in rest).lstrip(".")
            if key in keys:
                return keys[key]
            rest = rest[:-1]
        return self.rule_lines[rule]


def _dotted(key: str) -> str:
    """A TOML key with quotes and spaces around dots removed."""
    return ".".join(part.strip().strip("\"'") for part in key.split("."))
