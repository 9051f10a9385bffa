"""Go's ``os.ExpandEnv`` over a config text, strict about unset variables that matter.

Litestream expands ``$NAME`` and ``${NAME}`` over the whole file before parsing YAML and
turns an unset variable into ``""``. Here an unset variable is an error when the YAML
scalar it sits in feeds a key the caller reads (``is_read_key``); elsewhere (comments,
keys nobody reads) it expands to ``""`` exactly as in Litestream.
"""
from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import yaml

from lib.config.parsing import printable
from lib.errors import ConfigError

log = logging.getLogger(__name__)


KeyPath = Sequence[str | int]

_SPECIAL_NAMES = frozenset("*#$@!?-0123456789")

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_")

_IDENTIFIER_START = frozenset(string.ascii_letters + "_")


@dataclass(frozen=True)
class _Reference:
    """An unset variable referenced in the config text."""

    name: str
    offset: int  # index of its "$" in the text


def expand_env(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str = "config",
    is_read_key: Callable[[KeyPath], bool] = lambda path: True,
) -> str:
    """Expand ``$NAME`` and ``${NAME}`` like Go's ``os.ExpandEnv``, but strictly.

    Go's quirks are kept: a name is the longest ``[A-Za-z0-9_]`` run; ``$`` plus one of
    ``*#$@!?-`` or a digit is a special variable (so ``$$`` and ``$1`` vanish); ``${}``
    and an unclosed ``${`` are deleted; a ``$`` before anything else is kept.

    Unlike Go, an unset variable whose name starts like an identifier is an error when
    it feeds a key restorable reads. One set to ``""`` expands to ``""``. References in
    comments and in keys restorable ignores, and odd names such as ``${ x}``, expand to
    ``""`` as in Litestream.

    :param is_read_key: whether a key path (``["dbs", 0, "replica", "bucket"]``) is one
        the caller reads; unset variables elsewhere expand to ``""``.
    :raises ConfigError: naming the variable, the key it feeds and the fix.
    """
    missing: list[_Reference] = []

    def lookup(name: str, offset: int) -> str:
        if name in environ:
            return environ[name]
        if name[0] in _IDENTIFIER_START or _is_railway_reference(name):
            missing.append(_Reference(name, offset))
        return ""

    expanded = _go_expand(text, lookup)
    if missing:
        _raise_for_missing(text, missing, source, is_read_key)
    return expanded


def _go_expand(text: str, lookup: Callable[[str, int], str]) -> str:
    """Go's ``os.Expand`` over ``text``; ``lookup(name, offset_of_dollar)`` gives values."""
    out: list[str] = []
    literal_start = 0
    pos = 0
    while pos < len(text):
        if text[pos] == "$" and pos + 1 < len(text):
            out.append(text[literal_start:pos])
            name, width = _shell_name(text, pos + 1)
            if name:
                out.append(lookup(name, pos))
            elif width == 0:
                out.append("$")  # valid syntax but no name: keep the dollar
            pos += width
            literal_start = pos + 1
        pos += 1
    out.append(text[literal_start:])
    return "".join(out)


def _shell_name(text: str, start: int) -> tuple[str, int]:
    """The variable name after a ``$`` at ``start - 1`` and how many characters it uses.

    ``("", n > 0)`` means bad syntax whose ``n`` characters are swallowed.
    """
    first = text[start]
    if first == "{":
        if start + 2 < len(text) and text[start + 1] in _SPECIAL_NAMES and text[start + 2] == "}":
            return text[start + 1], 3
        close = text.find("}", start + 1)
        if close == -1:
            return "", 1  # unclosed "${": eat it
        if close == start + 1:
            return "", 2  # "${}": eat it
        return text[start + 1 : close], close - start + 1
    if first in _SPECIAL_NAMES:
        return first, 1
    end = start
    while end < len(text) and text[end] in _NAME_CHARS:
        end += 1
    return text[start:end], end - start


def _raise_for_missing(
    text: str, missing: Sequence[_Reference], source: str, is_read_key: Callable[[KeyPath], bool]
) -> None:
    """Raise for the first unset variable that feeds a key the caller reads, if any."""
    tree = _compose_quietly(text)
    feeding: list[tuple[_Reference, str]] = []
    for ref in missing:
        key = _reference_key(tree, text, ref.offset, is_read_key)
        if key is None:
            log.debug("unset variable in an ignored part of the config name=%s", ref.name)
        else:
            feeding.append((ref, key))
    if not feeding:
        return
    ref, key = feeding[0]
    if _is_railway_reference(ref.name):
        _raise_for_railway_reference(ref.name, key, source)
    name = printable(ref.name)
    others = sorted({other.name for other, _ in feeding} - {ref.name})
    also = f" (also unset: {', '.join(map(printable, others))})" if others else ""
    hint = "" if ref.name.isidentifier() else " (Litestream has no ${VAR:-default} syntax)"
    raise ConfigError(
        f"{source}: {key} uses ${{{name}}}, which is not set{hint}; set {name} in the environment{also}"
    )


def _is_railway_reference(name: str) -> bool:
    """``{Service.VAR`` is what Go's rules read from Railway's ``${{Service.VAR}}`` syntax."""
    return name.startswith("{") and len(name) > 1


def _raise_for_railway_reference(name: str, key: str, source: str) -> None:
    reference = printable(name[1:])
    raise ConfigError(
        f"{source}: {key} uses ${{{{{reference}}}}}, a Railway reference, which Railway fills only in a service's "
        f"variables, not inside files; set a service variable such as NAME=${{{{{reference}}}}} and write ${{NAME}} "
        "here"
    )


def _compose_quietly(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None


def _reference_key(
    tree: yaml.Node | None, text: str, offset: int, is_read_key: Callable[[KeyPath], bool]
) -> str | None:
    """The dotted key a ``$`` at ``offset`` feeds, or None when it feeds nothing we read."""
    line = text.count("\n", 0, offset) + 1
    if tree is None:  # unparsable before expansion: fall back to the line
        return _line_key(text, offset, line)
    try:
        path = _node_path(tree, offset, set())
    except RecursionError:  # nested deeper than Python's stack: name the line instead
        return _line_key(text, offset, line)
    if path is None or not is_read_key(path):
        return None
    return format_key(path) or f"line {line}"


def _line_key(text: str, offset: int, line: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    match = re.match(r"\s*(?:-\s+)?([\w.-]+)\s*:", text[start:offset])
    return f"{match.group(1)} (line {line})" if match else f"line {line}"


def _node_path(node: yaml.Node, offset: int, seen: set[int]) -> list[str | int] | None:
    """Keys and indexes from the root to the scalar covering ``offset``; None if none does."""
    if isinstance(node, yaml.ScalarNode):
        return [] if node.start_mark.index <= offset < node.end_mark.index else None
    if id(node) in seen:  # aliases can make the node graph cyclic
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if _node_path(key_node, offset, seen) is not None:
                return [label]
            below = _node_path(value_node, offset, seen)
            if below is not None:
                return [label, *below]
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            below = _node_path(item, offset, seen)
            if below is not None:
                return [index, *below]
    return None


def format_key(path: Sequence[str | int]) -> str:
    """``["dbs", 0, "replicas", 1, "bucket"]`` -> ``dbs[0].replicas[1].bucket``."""
    out = ""
    for part in path:
        name = printable(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out
