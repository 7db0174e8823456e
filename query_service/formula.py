"""Segmentation formulas (``m=formula&formula=UNIQUES(A)/UNIQUES(B)``): arithmetic over per-event metrics.

Grammar (parsed with Python's ``ast``, never evaluated as code): numbers, ``+ - * /``, parentheses and
``UNIQUES(X)``, ``TOTALS(X)``, ``PROPSUM(X)``, ``PROPAVG(X)``, ``PCT_DAU(X)`` where ``X`` is ``A`` (the ``e``
event) or ``B`` (``e2``). Division by zero gives 0, as Amplitude's charts show it.
"""

from __future__ import annotations

import ast
from typing import Any

from query_service.params import ParamError

FUNCTIONS = ("UNIQUES", "TOTALS", "PROPSUM", "PROPAVG", "PCT_DAU")


def parse_formula(text: str, n_events: int) -> ast.expr:
    if len(text) > 500:
        raise ParamError("formula", "is longer than 500 characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ParamError("formula", f"is not a formula: {text[:80]!r}") from None
    letters = "AB"[:n_events]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and len(node.args) == 1
                    and not node.keywords and isinstance(node.args[0], ast.Name) and node.args[0].id in letters):
                raise ParamError("formula", f"functions are {', '.join(FUNCTIONS)} of an event letter ({', '.join(letters)})")
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
                raise ParamError("formula", "only + - * / are allowed")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                raise ParamError("formula", "only + - * / are allowed")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ParamError("formula", "constants must be numbers")
        elif not isinstance(node, ast.Name | ast.Load | ast.operator | ast.unaryop):
            raise ParamError("formula", f"unsupported syntax: {type(node).__name__}")
    return tree


def _eval(node: ast.expr, metric: Any) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, metric)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, metric), _eval(node.right, metric)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b if b else 0.0
    assert isinstance(node, ast.Call)
    return metric(node.func.id, "AB".index(node.args[0].id))  # type: ignore[union-attr]


def evaluate_formula(q: Any, cells: dict, dau: dict, x_values: list[str]) -> dict[str, Any]:
    """One series (the formula) over xValues, plus its whole-range value."""
    tree = parse_formula(q.formula, len(q.events))
    zero = {"uniques": 0.0, "totals": 0.0, "vsum": 0.0, "vcount": 0.0}

    def value_at(bucket: str | None) -> float:
        def metric(fn: str, ei: int) -> float:
            r = cells.get((ei, "", ""), {}).get(bucket, zero)
            return {"UNIQUES": r["uniques"], "TOTALS": r["totals"], "PROPSUM": r["vsum"],
                    "PROPAVG": r["vsum"] / r["vcount"] if r["vcount"] else 0.0,
                    "PCT_DAU": 100.0 * r["uniques"] / dau[bucket] if dau.get(bucket) else 0.0}[fn]
        return round(_eval(tree, metric), 6)

    return {"series": [[value_at(x) for x in x_values]], "seriesLabels": [0],
            "seriesCollapsed": [[{"setId": "", "value": value_at(None)}]], "xValues": x_values}
