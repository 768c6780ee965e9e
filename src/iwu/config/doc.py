"""What each config key means, and the resolved config written out with it (`iwu config --show`).

A key's meaning is the trailing `# ...` comment of its field in the dataclass that declares it,
read from the source: the comment a reader of config.py sees is the one `--show` prints, and
a new field is documented by the comment it needs anyway. The walk is generic over nested
dataclasses, lists of them and plain mappings, so new sections need nothing here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import json
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator

import yaml

_PRAGMA = re.compile(r"(fmt|noqa|type|pragma)\b")  # tool directives, not meanings
_COMMENT_COLUMN = 44


@functools.cache
def field_meanings(cls: type) -> dict[str, str]:
    """`{field name: meaning}` for the fields of dataclass `cls` that have a trailing comment (bases included)."""
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            meanings.update(_trailing_comments(klass))
    return {f.name: meanings[f.name] for f in dataclasses.fields(cls) if f.name in meanings}


def _trailing_comments(cls: type) -> dict[str, str]:
    """The comment ending each `name: annotation` statement directly in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept (an interactive session)
        return {}
    found, statement, depth, start_depth = {}, [], 0, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NL and all(t.type == tokenize.COMMENT for t in statement):
            statement = []  # a comment on a line of its own belongs to no field
        elif tok.type == tokenize.NEWLINE:
            code = [t for t in statement if t.type != tokenize.COMMENT]
            if start_depth == 1 and len(code) > 1 and code[0].type == tokenize.NAME and code[1].string == ":":
                comments = [t.string.lstrip("#").strip() for t in statement if t.type == tokenize.COMMENT]
                comments = [c for c in comments if c and not _PRAGMA.match(c)]
                if comments:
                    found[code[0].string] = " ".join(comments)
            statement = []
        elif tok.type not in (tokenize.NL, tokenize.ENDMARKER):
            if not statement:
                start_depth = depth
            statement.append(tok)
    return found


def config_dataclasses(cls: type) -> list[type]:
    """`cls` and every dataclass its fields' annotations reach (in lists, unions, ...), each once."""
    seen: list[type] = []

    def visit(tp) -> None:
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if tp not in seen:
                seen.append(tp)
                for hint in typing.get_type_hints(tp).values():
                    visit(hint)
        elif typing.get_origin(tp) is not None or isinstance(tp, types.UnionType):
            for arg in typing.get_args(tp):
                visit(arg)

    visit(cls)
    return seen


def show_config(config) -> str:
    """`config` as YAML (that `load_config` reads back): every key, its value and, as a comment,
    its meaning and its default where the value differs."""
    rows = list(_fields(config, ""))
    column = min(max(len(text) for text, _ in rows), _COMMENT_COLUMN) + 2
    # at least one space before `#`: YAML reads `value# note` as part of the value
    return "".join(f"{text.ljust(column - 1)} # {note}\n" if note else f"{text}\n" for text, note in rows)


def _fields(obj, indent: str) -> Iterator[tuple[str, str]]:
    meanings = field_meanings(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        note = meanings.get(f.name, "")
        default = _declared_default(f)
        if default is not dataclasses.MISSING and not dataclasses.is_dataclass(value) and value != default:
            note = f"{note} (default: {_scalar(_plain(default))})".strip()
        yield from _entry(f.name, value, note, indent)


def _entry(key, value, note: str, indent: str) -> Iterator[tuple[str, str]]:
    head = f"{indent}{_scalar(key)}:"
    if dataclasses.is_dataclass(value):
        yield head, note
        yield from _fields(value, indent + "  ")
    elif isinstance(value, dict) and value:
        yield head, note
        for k, v in value.items():
            yield from _entry(k, v, "", indent + "  ")
    elif isinstance(value, list) and any(dataclasses.is_dataclass(v) or isinstance(v, dict) and v for v in value):
        yield head, note
        for item in value:
            yield from _item(item, indent + "  ")
    else:
        yield f"{head} {_scalar(_plain(value))}", note


def _item(item, indent: str) -> Iterator[tuple[str, str]]:
    """A list item in block style: its first row carries the `- `."""
    if dataclasses.is_dataclass(item):
        rows = list(_fields(item, indent + "  "))
    elif isinstance(item, dict) and item:
        rows = [row for k, v in item.items() for row in _entry(k, v, "", indent + "  ")]
    else:
        rows = []
    if not rows:
        yield f"{indent}- {_scalar(_plain(item))}", ""
        return
    (text, note), *rest = rows
    yield f"{indent}- {text[len(indent) + 2:]}", note
    yield from rest


def _declared_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    """Dataclasses as the mappings a config file holds."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _scalar(value) -> str:
    """One value on one line, quoted as YAML needs (`'24:00:00'`, `'yes'`), collections in flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True, sort_keys=False)
    text = text.removesuffix("...\n").strip()
    if "\n" in text:  # a string with line breaks: JSON's escapes are YAML too
        text = json.dumps(value, ensure_ascii=False)
    return text
