"""YAML (and JSON) → plain data, keeping the line of every node.

Rule and session files are untrusted: only the plain YAML types are built (no Python objects, no custom
tags), duplicate keys are errors, anchors and aliases are refused (they are how "billion laughs" bombs
work), and nesting is bounded.
"""
from __future__ import annotations

import datetime as _dt

import yaml

from .errors import InputError

MAX_DEPTH = 40
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp",
}
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class Located:
    """Plain data plus `lines`: a map from a path tuple (`("rules", 2, "id")`) to its 1-based line."""

    __slots__ = ("data", "lines", "file")

    def __init__(self, data, lines: dict, file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path) -> int | None:
        """Line of the node at `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def format_path(path) -> str:
    """('rules', 2, 'then', 0) → 'rules[2].then[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases as soon as the parser meets them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in rule or session files", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors (&name) are not allowed in rule or session files", event.start_mark)
        return super().compose_node(parent, index)


# libyaml's parser when present: several times faster, and it bounds nesting itself. Its composer
# shares one node between an anchor and its aliases; _Builder refuses any node met twice.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None) if getattr(yaml, "__with_libyaml__", False) else None


def load_text(text: str, file: str, error_class=InputError, multi: bool = False) -> Located:
    """Parse one YAML/JSON document (or, with `multi`, a stream) into Located data."""
    try:
        loader = (_FAST_LOADER or _Loader)(text)
        try:
            nodes = []
            while loader.check_node():
                nodes.append(loader.get_node())
                if not multi and len(nodes) > 1:
                    raise error_class("expected one YAML document, found several", file, nodes[1].start_mark.line + 1)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if mark and _tab_at(text, mark) or "tab character" in problem:
            raise error_class("a tab character; indent YAML with spaces", file, line) from None
        raise error_class(f"invalid YAML: {problem}", file, line) from None
    except yaml.YAMLError as exc:
        raise error_class(f"invalid YAML: {exc}", file) from None
    except RecursionError:
        raise error_class(f"document nested too deeply (more than {MAX_DEPTH} levels)", file) from None
    lines: dict = {}
    if not nodes:
        return Located(None, {(): 1}, file)
    builder = _Builder(file, error_class, lines)
    if multi:
        return Located([builder.build(n, (i,), 0) for i, n in enumerate(nodes)], lines, file)
    return Located(builder.build(nodes[0], (), 0), lines, file)


def _tab_at(text: str, mark) -> bool:
    """Whether the parser stopped at a tab (PyYAML: "found character '\\t' that cannot start any token")."""
    lines = text.split("\n", mark.line + 1)
    return mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t"


class _Builder:
    def __init__(self, file, error_class, lines):
        self.file = file
        self.error_class = error_class
        self.lines = lines
        self.constructor = yaml.SafeLoader("")
        self.seen = set()           # ids of nodes built: a node met again is an alias

    def fail(self, message, node, path):
        raise self.error_class(message, self.file, node.start_mark.line + 1, format_path(path))

    def build(self, node, path, depth):
        if depth > MAX_DEPTH:
            self.fail(f"nested too deeply (more than {MAX_DEPTH} levels)", node, path)
        if id(node) in self.seen:
            self.fail("YAML aliases (*name) are not allowed in rule or session files", node, path)
        self.seen.add(id(node))
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
            self.fail(f"YAML tag {node.tag!r} is not allowed (plain values only)", node, path)
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.fail("mapping keys must be plain scalars", key_node, path)
                key = self.scalar(key_node, path)
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    self.fail(f"mapping key {key!r} must be a string", key_node, path)
                key = str(key)
                if key in out:
                    self.fail(f"duplicate key {key!r} (first at line {self.lines[path + (key,)]})",
                              key_node, path + (key,))
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, path + (key,), depth + 1)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node, path):
        if node.tag not in _PLAIN_TAGS:
            self.fail(f"YAML tag {node.tag!r} is not allowed (plain values only)", node, path)
        if node.tag.endswith(":timestamp"):
            return self.date(node)
        try:
            value = self.constructor.construct_object(node, deep=False)
        except ValueError:      # e.g. an integer of more than 4,300 digits
            self.fail("not a number the engine accepts (too large)", node, path)
        if isinstance(value, float) and value != value:
            self.fail("NaN is not a number the engine accepts", node, path)
        return value

    def date(self, node):
        """An unquoted date as its ISO text. Anything else that looks like a timestamp (a date and
        time, an impossible date) stays the text it was, for the schema and date checks to report
        against the field it belongs to."""
        try:
            value = self.constructor.construct_object(node, deep=False)
        except ValueError:
            return node.value
        if isinstance(value, _dt.datetime):
            return node.value
        return value.isoformat()
