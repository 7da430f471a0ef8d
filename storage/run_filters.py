"""Which runs a listing holds: `RunFilter` and the SQL it becomes.

Statuses, datasets, ids, text, tags, config conditions (`dropout >= 0.3`, checked by
`check_condition` / `parse_condition`) and metric ranges, each a WHERE clause. Tests on the JSON
stored as text (the config, the tags) are `_JsonTest`, compiled for each backend (SQLite's JSON1
functions, PostgreSQL's jsonb operators) with every value a bound parameter. storage.listings
builds its queries with these clauses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Float, String, and_, bindparam, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from cnn_ablation.storage.models import RunRow

CONDITION_OPS = ("=", "!=", "<", "<=", ">", ">=", "contains")
# Metric ranges a listing can narrow by: name -> what a user reads. Fractions, as stored.
METRIC_RANGES = {"best_val_accuracy": "best val acc", "final_val_accuracy": "final val acc",
                 "test_accuracy": "test acc"}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_condition(field_name: str, op: str, value: str) -> tuple[str, str, str]:
    """A config condition as a listing stores it: (field, op, value as typed). ValueError naming
    the part that is wrong and what is allowed."""
    field_name, op, value = str(field_name).strip(), str(op).strip(), str(value).strip()
    if not _FIELD.fullmatch(field_name):
        raise ValueError(f"config field: {field_name!r} is not allowed; allowed: a config "
                         "field name such as dropout, optimizer, bn_off (letters, digits, _)")
    if op not in CONDITION_OPS:
        raise ValueError(f"operator: {op!r} is not allowed; allowed: {' '.join(CONDITION_OPS)}")
    if not value or len(value) > 200:
        raise ValueError(f"value: {value!r} is not allowed; allowed: 1 to 200 characters")
    if op in ("<", "<=", ">", ">=") and _number(value) is None:
        raise ValueError(f"value: {value!r} is not allowed with {op}; allowed: a number")
    return field_name, op, value


def parse_condition(text: str) -> tuple[str, str, str]:
    """`dropout >= 0.3`, `optimizer = adam`, `bn_off contains conv_3` as (field, op, value);
    ValueError naming what is wrong."""
    match = re.fullmatch(r"\s*([^\s<>=!]+)\s*(contains|!=|<=|>=|=|<|>)\s*(.*?)\s*", str(text))
    if not match:
        raise ValueError(f"config filter: {text!r} is not allowed; allowed: FIELD OP VALUE "
                         f"with OP one of {' '.join(CONDITION_OPS)}, e.g. dropout >= 0.3")
    return check_condition(*match.groups())


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _JsonTest(ColumnElement[bool]):
    """A test on a JSON document stored as text (`runs.config_json`, `runs.tags_json`), written
    for each backend: SQLite's JSON1 functions (json_extract, json_type, json_each), PostgreSQL's
    jsonb operators. `key` is a top-level key (None: the document itself); `op` as in
    CONDITION_OPS; `value` the text typed (a number where it reads as one, true/false as
    booleans). Values are bound parameters, never spliced into the SQL."""

    type = Boolean()
    inherit_cache = False

    def __init__(self, column: Any, key: str | None, op: str, value: str,
                 index: int | None = None, text_only: bool = False):
        self.document, self.json_key, self.test_op, self.text, self.position = \
            column, key, op, value, index
        self.text_only = text_only  # tags: "2024" and "true" are text, never a number/boolean

    def bound_value(self) -> Any:
        return self.text if self.text_only else _typed(self.text)


def _typed(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    number = _number(value)
    return value if number is None else number


@compiles(_JsonTest, "sqlite")
def _json_test_sqlite(element: _JsonTest, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.document, **kw)
    path = "$" if element.json_key is None else f'$."{element.json_key}"'
    if element.position is not None:
        path += f"[{element.position}]"
    p = compiler.process(bindparam(None, path, type_=String()), **kw)
    typed = element.bound_value()
    v = compiler.process(bindparam(None, typed, type_=_bind_type(typed)), **kw)
    kind = f"json_type({column}, {p})"
    got = f"json_extract({column}, {p})"
    if element.test_op == "contains":
        text = compiler.process(bindparam(None, element.text.lower(), type_=String()), **kw)
        return (f"(({kind} = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, {p}) AS e "
                f"WHERE e.value = {v})) OR ({kind} = 'text' AND instr(lower({got}), {text}) > 0))")
    if isinstance(typed, bool):
        wanted = "'true'" if typed else "'false'"
        return f"({kind} {'=' if element.test_op == '=' else '!='} {wanted})"
    if isinstance(typed, float):
        number = f"(CASE WHEN {kind} IN ('integer', 'real') THEN {got} END)"
        return f"({number} {element.test_op} {v})"
    return f"({kind} = 'text' AND {got} {element.test_op} {v})"


@compiles(_JsonTest, "postgresql")
def _json_test_postgresql(element: _JsonTest, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.document, **kw)
    doc = f"CAST({column} AS JSONB)"
    if element.json_key is not None:
        key = compiler.process(bindparam(None, element.json_key, type_=String()), **kw)
        doc = f"({doc} -> CAST({key} AS TEXT))"
    if element.position is not None:
        doc = f"({doc} -> {int(element.position)})"
    typed = element.bound_value()
    if isinstance(typed, bool):
        literal = f"CAST({'true' if typed else 'false'} AS BOOLEAN)"
    else:
        bound = compiler.process(bindparam(None, typed, type_=_bind_type(typed)), **kw)
        literal = f"CAST({bound} AS {'DOUBLE PRECISION' if isinstance(typed, float) else 'TEXT'})"
    kind = f"jsonb_typeof({doc})"
    if element.test_op == "contains":
        text = compiler.process(bindparam(None, element.text.lower(), type_=String()), **kw)
        return (f"(({kind} = 'array' AND {doc} @> jsonb_build_array({literal})) OR "
                f"({kind} = 'string' AND strpos(lower({doc} #>> '{{}}'), {text}) > 0))")
    op = "<>" if element.test_op == "!=" else element.test_op
    if isinstance(typed, bool):
        return f"({kind} = 'boolean' AND {doc} {'=' if op == '=' else '<>'} to_jsonb({literal}))"
    if isinstance(typed, float):
        number = f"(CASE WHEN {kind} = 'number' THEN CAST({doc} #>> '{{}}' AS DOUBLE PRECISION) END)"
        return f"({number} {op} {literal})"
    return f"({kind} = 'string' AND ({doc} #>> '{{}}') {op} {literal})"


def _bind_type(value: Any) -> Any:
    return Float() if isinstance(value, float) else String()


def _config_condition(field_name: str, op: str, value: str) -> Any:
    """SQL for one config condition. `bn_off contains LAYER` also holds for a preset whose
    switch for LAYER is off (presets store `bn` as one 0/1 per position, not names)."""
    test = _JsonTest(RunRow.config_json, field_name, op, value)
    if field_name == "bn_off" and op == "contains":
        presets = []
        for preset, layers in _preset_bn_positions().items():
            if value in layers:
                presets.append(and_(RunRow.preset == preset,
                                    _JsonTest(RunRow.config_json, "bn", "=", "0",
                                              index=layers.index(value))))
        return or_(test, *presets)
    return test


def _preset_bn_positions() -> dict[str, tuple[str, ...]]:
    """Each preset's BatchNorm positions by name (storage imports nothing of cnn_ablation:
    the chapter's networks, as cnn_ablation.architecture.PRESETS names them)."""
    return {"seed": ("conv_1", "conv_2", "conv_3", "conv_4", "dense_1")}


def _metric_range(metric: str, low: float | None, high: float | None) -> Any:
    """The run's own column (the epoch aggregates are kept on the run), through its index."""
    if metric not in METRIC_RANGES:
        raise ValueError(f"metric: {metric!r} is not allowed; allowed: "
                         f"{', '.join(METRIC_RANGES)}")
    target = getattr(RunRow, metric)
    tests = [target.is_not(None)]
    if low is not None:
        tests.append(target >= low)
    if high is not None:
        tests.append(target <= high)
    return and_(*tests)


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing holds; every field narrows it (empty or None: no narrowing).

    `tags`: runs carrying every one of these tags. `conditions`: (field, op, value) tests on the
    stored config, all of which must hold (`check_condition`; a run without the field fails
    them). `metrics`: (metric, low, high) ranges, fractions, either end None for open (a run
    without the metric fails them; METRIC_RANGES)."""

    statuses: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    study_id: int | None = None
    ids: tuple[int, ...] | None = None
    config_hashes: tuple[str, ...] | None = None
    text: str = ""  # in the name or the config label, any case
    tags: tuple[str, ...] = ()
    conditions: tuple[tuple[str, str, str], ...] = ()
    metrics: tuple[tuple[str, float | None, float | None], ...] = ()

    def clauses(self) -> list[Any]:
        where: list[Any] = []
        if self.statuses:
            where.append(RunRow.status.in_([str(s) for s in self.statuses]))
        if self.datasets:
            where.append(RunRow.dataset.in_(self.datasets))
        if self.study_id is not None:
            where.append(RunRow.study_id == self.study_id)
        if self.ids is not None:
            where.append(RunRow.id.in_(self.ids))
        if self.config_hashes is not None:
            where.append(RunRow.config_hash.in_(self.config_hashes))
        if self.text.strip():
            needle = self.text.strip()
            where.append(or_(RunRow.name.icontains(needle, autoescape=True),
                             RunRow.label.icontains(needle, autoescape=True)))
        for tag in self.tags:
            where.append(_JsonTest(RunRow.tags_json, None, "contains", str(tag).strip().lower(),
                                   text_only=True))
        for condition in self.conditions:
            where.append(_config_condition(*check_condition(*condition)))
        for metric, low, high in self.metrics:
            where.append(_metric_range(metric, low, high))
        return where
