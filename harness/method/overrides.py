"""``--set key=value`` overrides of a DIConfig (dotted keys reach a group's field: ``--set eval.n=500``) and the
field docs that ``python -m harness.run --help`` lists."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import fields, replace
from typing import Any

from harness.method.config import GROUPS, LEGACY_NAMES, ConfigError, DIConfig


def field_docs(cls=DIConfig) -> dict[str, str]:
    """The docstring written under each field of ``cls`` (attribute docstrings are not kept at runtime, so they
    are read from the source); a group's fields (eval, toy) under their dotted names."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    if cls is DIConfig:
        for head in ("eval", "toy"):
            docs.update({f"{head}.{k}": v for k, v in field_docs(GROUPS[head]).items()})
    return docs


def documented_fields() -> list[tuple[str, Any]]:
    """(name, default) of every field, a group's fields under their dotted names, in declaration order."""
    out = []
    for f in dataclasses.fields(DIConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in ("eval", "toy"):
            out += [(f"{f.name}.{g.name}", getattr(default, g.name)) for g in dataclasses.fields(default)]
        else:
            out.append((f.name, default))
    return out


def _parse_value(raw: str, current: Any, key: str) -> Any:
    """Parse ``raw`` to the type of the field's current value."""
    try:
        if isinstance(current, bool):
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            return tuple(float(x) for x in raw.strip("()[]").split(","))
        return raw
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected a {type(current).__name__}") from None


def apply_overrides(cfg: DIConfig, overrides: dict[str, str] | list[str]) -> DIConfig:
    """``{'lr_gen': '1e-4', 'gen_sigma.sigma_max': '10'}`` or ``['lr_gen=1e-4', ...]`` -> a new config. The names
    the grouped fields had before (``eval_n``, ``toy_mode_weights``, ...) still work."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v.strip()
        overrides = pairs
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    names = {f.name for f in fields(DIConfig)}
    for key, raw in overrides.items():
        head, _, sub = LEGACY_NAMES.get(key, key).partition(".")
        if head not in names:
            raise ConfigError(f"unknown config field {head!r}; see `python -m harness.run --help` (it lists every field)")
        current = getattr(cfg, head)
        if sub:
            if head not in GROUPS or sub not in {f.name for f in fields(GROUPS[head])}:
                raise ConfigError(f"unknown config field {key!r}")
            nested.setdefault(head, {})[sub] = _parse_value(raw, getattr(current, sub), key) if not isinstance(raw, (int, float)) else raw
        elif isinstance(raw, str):
            top[head] = _parse_value(raw, current, key)
        else:
            top[head] = raw
    for head, subs in nested.items():
        top[head] = replace(getattr(cfg, head), **subs)
    return replace(cfg, **top)
