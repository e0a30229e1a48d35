"""YAML as recipes and `key=value` overrides are read: `yaml.safe_load`, made strict where a silent reading
would be wrong or unbounded.

- A key given twice in one mapping is refused (YAML keeps the last value without a word, so a recipe with
  `steps:` twice would run with the second one). Keys that `<<: *anchor` merges in may be overridden, as
  YAML intends.
- Anchors and aliases may not expand past `MAX_VALUES` values: a few hundred bytes of nested aliases can
  stand for billions of values, which anything that walks or prints the value would then build.
"""

from __future__ import annotations

from typing import Any

import yaml

from higgs_ds.errors import quote

MAX_VALUES = 100_000  # scalars, lists and mappings once aliases are expanded; a real recipe has a few hundred


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = lines.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: safe_load's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise ValueError(f"key {quote(key)} is given twice (lines {first} and "
                                 f"{key_node.start_mark.line + 1}), and only one value can hold")
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values `node` stands for once every alias is expanded; each distinct node is counted once, so this
    costs as much as the text, not as the expansion."""
    if id(node) not in sizes:
        sizes[id(node)] = 1  # a recursive alias counts once
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        sizes[id(node)] = min(1 + sum(_expanded_size(child, sizes) for child in children), MAX_VALUES + 1)
    return sizes[id(node)]


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)` with the rules above; a ValueError says which rule (a YAMLError: not YAML)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_VALUES:
            raise ValueError(f"its anchors and aliases (&name, *name) expand to more than {MAX_VALUES:,} values; "
                             f"write the values out")
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    finally:
        loader.dispose()
