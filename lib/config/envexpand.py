"""Go's ``os.ExpandEnv`` over a config text, strict about unset variables that matter.

Litestream expands ``$NAME`` and ``${NAME}`` over the whole file before parsing YAML and
turns an unset variable into ``""``. Here an unset variable is an error when the YAML
scalar it sits in feeds a key the caller reads (``is_read_key``); elsewhere (comments,
keys nobody reads) it expands to ``""`` exactly as in Litestream.
"""
from __future__ import annotations

import bisect
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

_SHOWN_OTHERS = 5  # unset names listed beside the first; the rest are counted

_LINE_KEY = re.compile(r"\s*(?:-\s+)?([\w.-]+)\s*:")


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
    closers = _Closers(text)
    literal_start = 0
    pos = 0
    while pos < len(text):
        if text[pos] == "$" and pos + 1 < len(text):
            out.append(text[literal_start:pos])
            name, width = _shell_name(text, pos + 1, closers)
            if name:
                out.append(lookup(name, pos))
            elif width == 0:
                out.append("$")  # valid syntax but no name: keep the dollar
            pos += width
            literal_start = pos + 1
        pos += 1
    out.append(text[literal_start:])
    return "".join(out)


class _Closers:
    """Where each ``}`` of a text is, found in one pass: a search from every ``${`` made a
    text of many unclosed ones quadratic."""

    def __init__(self, text: str):
        self._positions = [match.start() for match in re.finditer("}", text)]

    def after(self, index: int) -> int:
        """The first ``}`` at or after ``index``, or -1."""
        found = bisect.bisect_left(self._positions, index)
        return self._positions[found] if found < len(self._positions) else -1


def _shell_name(text: str, start: int, closers: _Closers) -> tuple[str, int]:
    """The variable name after a ``$`` at ``start - 1`` and how many characters it uses.

    ``("", n > 0)`` means bad syntax whose ``n`` characters are swallowed.
    """
    first = text[start]
    if first == "{":
        if start + 2 < len(text) and text[start + 1] in _SPECIAL_NAMES and text[start + 2] == "}":
            return text[start + 1], 3
        close = closers.after(start + 1)
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
    locator = _Locator(text, _compose_quietly(text), is_read_key)
    feeding = [ref for ref in missing if locator.feeds(ref.offset)]
    if not feeding:
        log.debug("unset variables only in ignored parts of the config count=%d", len(missing))
        return
    ref = feeding[0]
    key = locator.key(ref.offset)
    if _is_railway_reference(ref.name):
        _raise_for_railway_reference(ref.name, key, source)
    name = printable(ref.name)
    others = sorted({other.name for other in feeding} - {ref.name})
    more = f" and {len(others) - _SHOWN_OTHERS} more" if len(others) > _SHOWN_OTHERS else ""
    also = f" (also unset: {', '.join(map(printable, others[:_SHOWN_OTHERS]))}{more})" if others else ""
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


class _Locator:
    """Which key a position of the config text feeds, answered in O(log n) per position.

    The YAML tree is walked once into the spans of its scalars and the text's line starts
    are indexed once: 60,000 unset references walked the tree and counted lines each,
    15 s of quadratic work.
    """

    def __init__(self, text: str, tree: yaml.Node | None, is_read_key: Callable[[KeyPath], bool]):
        self._text = text
        self._newlines = [match.start() for match in re.finditer("\n", text)]
        self._parsed = tree is not None
        spans = _scalar_spans(tree) if tree is not None else {}
        self._starts = sorted(spans)
        self._ends = [spans[start][0] for start in self._starts]
        self._paths = [spans[start][1] for start in self._starts]
        self._read = [is_read_key(path) for path in self._paths]

    def feeds(self, offset: int) -> bool:
        """Whether the ``$`` at ``offset`` sits in a scalar feeding a key the caller reads.

        An unparsable text counts everything as read (its errors name the line).
        """
        found = self._scalar(offset)
        return not self._parsed or found is not None and self._read[found]

    def key(self, offset: int) -> str:
        """The dotted key (or the line) the ``$`` at ``offset`` feeds; call when ``feeds``."""
        found = self._scalar(offset)
        if found is None:
            return self._line_key(offset)
        return format_key(self._paths[found]) or f"line {self._line(offset)}"

    def _scalar(self, offset: int) -> int | None:
        found = bisect.bisect_right(self._starts, offset) - 1
        return found if found >= 0 and offset < self._ends[found] else None

    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def _line_key(self, offset: int) -> str:
        line = self._line(offset)
        start = self._newlines[line - 2] + 1 if line > 1 else 0
        match = _LINE_KEY.match(self._text, start, offset)
        return f"{match.group(1)} (line {line})" if match else f"line {line}"


def _scalar_spans(tree: yaml.Node) -> dict[int, tuple[int, list[str | int]]]:
    """``{start: (end, path)}`` of every scalar, path = keys and indexes from the root.

    A scalar inside a mapping key gets the path of that key. Depth-first in document
    order without recursion; a node reached again through an alias keeps its first path
    (aliases can make the node graph cyclic).
    """
    spans: dict[int, tuple[int, list[str | int]]] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, list[str | int], bool]] = [(tree, [], False)]
    while stack:
        node, path, in_key = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            spans.setdefault(node.start_mark.index, (node.end_mark.index, path))
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, list[str | int], bool]] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                children.append((key_node, path if in_key else [*path, label], True))
                children.append((value_node, path if in_key else [*path, label], in_key))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, path if in_key else [*path, index], in_key) for index, item in enumerate(node.value)]
        stack.extend(reversed(children))
    return spans


def format_key(path: Sequence[str | int]) -> str:
    """``["dbs", 0, "replicas", 1, "bucket"]`` -> ``dbs[0].replicas[1].bucket``."""
    out = ""
    for part in path:
        name = printable(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out
