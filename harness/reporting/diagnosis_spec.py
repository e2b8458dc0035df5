"""The diagnosis report's TOML spec: its hypotheses and figures, validated (harness.reporting.diagnosis)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path


FIGURE_KINDS = ("curves", "samples", "diagnostics", "classes", "effects")


class ReportSpecError(ValueError):
    """An invalid report spec; the message is one line."""


@dataclass
class Hypothesis:
    name: str
    study: str
    reference: str
    variants: list[str] = field(default_factory=list)
    note: str = ""
    at_kimg: float | None = None  # compare the curve points at this kimg, not the final evaluations


def load_spec(path: Path) -> dict:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportSpecError(f"no report spec at {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ReportSpecError(f"{path}: {err}") from None
    for k in ("title", "question", "answer"):
        if k not in raw:
            raise ReportSpecError(f"{path}: missing '{k}'")
    def need(section: str, entry: dict, keys: tuple[str, ...]) -> None:
        missing = [k for k in keys if k not in entry]
        if missing:
            raise ReportSpecError(f"{path}: a [[{section}]] entry lacks {', '.join(missing)}")

    def positive(what: str, entry: dict, k: str) -> None:
        v = entry.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ReportSpecError(f"{path}: {what} {entry.get('name', '')}: {k} must be a positive number, got {v!r}")

    for h in raw.get("hypothesis", []):
        need("hypothesis", h, ("name", "study", "reference"))
        positive("hypothesis", h, "at_kimg")
    for section in ("reproduction", "control"):
        for r in raw.get(section, []):
            need(section, r, ("name", "title", "runs"))
            positive(section, r, "at_lr_updates")
            positive(section, r, "from_lr_updates")
            if "from_lr_updates" in r and not r["from_lr_updates"] < r.get("at_lr_updates", 0):
                raise ReportSpecError(f"{path}: {section} {r['name']}: from_lr_updates needs a larger at_lr_updates, "
                                      f"got {r['from_lr_updates']!r} -> {r.get('at_lr_updates')!r}")
    for f in raw.get("figure", []):
        need("figure", f, ("kind",))
        if f["kind"] not in FIGURE_KINDS:
            raise ReportSpecError(f"{path}: figure kind must be one of {', '.join(FIGURE_KINDS)}, got {f['kind']!r}")
        if f.get("x", "kimg") not in ("kimg", "lr_updates") or ("x" in f and f["kind"] != "curves"):
            raise ReportSpecError(f"{path}: a figure's x is kimg or lr_updates, and only for kind = curves; got {f.get('x')!r}")
        if ("study" in f) == ("runs" in f):
            raise ReportSpecError(f"{path}: a [[figure]] entry names either `study` or `runs`, not both or neither")
    try:
        raw["hypothesis"] = [Hypothesis(**h) for h in raw.get("hypothesis", [])]
    except TypeError as err:  # an unknown key in a [[hypothesis]] entry
        raise ReportSpecError(f"{path}: [[hypothesis]]: {err}") from None
    return raw
