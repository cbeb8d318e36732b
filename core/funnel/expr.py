"""Rule expressions: a whitelisted subset of Python's expression grammar, compiled once into NumPy.

`compile_expr(text, fields)` parses `text` with CPython's own parser (`ast.parse(mode="eval")`, so
syntax errors carry a line and column), checks every node against the whitelist and every field
against `fields` (core.funnel.fields), type-checks it, and returns a `Compiled` whose `fn(env)`
evaluates the rule for a whole array of candidates at once. User text is never passed to
`eval`/`compile`: the tree is walked and turned into closures over NumPy operations.

Grammar (anything else is rejected with its name and position):
- literals: numbers, "strings", True/False, None (only in `x is None` / `x is not None`);
- dotted field names (`ad.vertical`, `request.country`, `candidate.pctr`);
- comparisons `== != < <= > >=` (ordering on numbers only; chains like `a < b < c`);
- `x in [literal, ...]` / `x not in [...]`; `x in <list field>` (per-row membership) and the
  same written `<list field> contains x`;
- `and`, `or`, `not` on booleans; `+ - * /` and unary `-` on numbers; `len(<list field>)`.
A missing number is NaN (every comparison with it is false); a missing text is None.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

NUM, STR, BOOL, LIST, NULL = "number", "text", "boolean", "list", "null"


class ExprError(Exception):
    """A problem in one expression: message plus the 1-based line and column it points at."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        self.message, self.line, self.col = message, line, col
        where = f" at line {line}, column {col}" if line is not None else ""
        super().__init__(f"{message}{where}")


@dataclass(frozen=True)
class FieldSpec:
    """One field a rule can read: its type, whether it varies per candidate, and a fetcher
    `fetch(env)` returning an array over the candidates (per_row) or one value (per request).
    A per-row list field fetches a `RowLists`; a per-request list, a tuple of strings."""

    name: str
    type: str
    per_row: bool
    fetch: Callable
    doc: str = ""
    stage: str = "eligibility"  # "ranking": only known after pCTR (candidate.pctr, candidate.ecpm)


class RowLists:
    """A per-candidate list column: CSR view (core.funnel.ad_facts.ListColumn) at positions."""

    def __init__(self, column, pos: np.ndarray):
        self.column, self.pos = column, pos

    def lengths(self) -> np.ndarray:
        c = self.column
        return c.indptr[self.pos + 1] - c.indptr[self.pos]

    def contains_scalar(self, value) -> np.ndarray:
        return self.column.contains(self.pos, None if value is None else str(value))

    def contains_rows(self, values: np.ndarray) -> np.ndarray:
        """Row i: values[i] in list i (vectorised: one sorted key per (row, value code) pair)."""
        return self.column.contains_each(self.pos, values)

    def values(self, i: int) -> list[str]:
        return self.column.values(int(self.pos[i]))


@dataclass
class Compiled:
    """A type-checked expression: `fn(env)` gives a bool mask (or a value for sub-expressions)."""

    text: str
    type: str
    per_row: bool
    fn: Callable
    fields: tuple[str, ...]  # every field it reads, in order of first use
    stage: str = "eligibility"

    def mask(self, env, n: int) -> np.ndarray:
        out = self.fn(env)
        if isinstance(out, np.ndarray) and out.shape == (n,):
            return out.astype(bool, copy=False)
        return np.full(n, bool(out))


_CMP = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
        ast.Gt: np.greater, ast.GtE: np.greater_equal}
_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
_SYMBOL = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.In: "in", ast.NotIn: "not in"}


def rewrite_contains(text: str) -> str:
    """`A contains B` -> `A >> B` padded to the same width (so columns stay right); the compiler
    reads `>>` as contains, and a `>>` the user wrote is rejected."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return text  # let ast.parse report it with a position
    lines = text.splitlines(keepends=True) or [""]
    for t in toks:
        if t.type == tokenize.OP and t.string == ">>":
            raise ExprError("operator '>>' is not allowed", t.start[0], t.start[1] + 1)
    for t in reversed(toks):
        if t.type == tokenize.NAME and t.string == "contains":
            (r, c), (_, e) = t.start, t.end
            line = lines[r - 1]
            lines[r - 1] = line[:c] + ">>".ljust(e - c) + line[e:]
    return "".join(lines)


def _isnull(v):
    if isinstance(v, np.ndarray):
        return np.isnan(v) if v.dtype.kind == "f" else pd.isna(v)
    return v is None or (isinstance(v, float) and np.isnan(v))


class _Compiler:
    def __init__(self, text: str, fields: Mapping[str, FieldSpec]):
        self.text, self.fields, self.used = text, fields, []

    def err(self, node: ast.AST, message: str) -> ExprError:
        line = getattr(node, "lineno", None)  # the text is wrapped in "(\n ... \n)"
        return ExprError(message, None if line is None else line - 1, getattr(node, "col_offset", -1) + 1)

    def src(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def describe(self, node, c: Compiled) -> str:
        return f"{self.src(node).replace('>>', 'contains')!r} ({c.type})"

    def build(self, node: ast.AST) -> Compiled:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.err(node, f"{type(node).__name__} ({self.src(node)!r}) is not allowed in a rule "
                                 "expression; see data/README.md for the grammar")
        return method(node)

    def _mk(self, node, type_, per_row, fn, stage="eligibility") -> Compiled:
        return Compiled(self.src(node), type_, per_row, fn, tuple(self.used), stage)

    # ---- leaves -------------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> Compiled:
        v = node.value
        if isinstance(v, bool):
            return self._mk(node, BOOL, False, lambda env: v)
        if isinstance(v, (int, float)):
            f = float(v)
            return self._mk(node, NUM, False, lambda env: f)
        if isinstance(v, str):
            return self._mk(node, STR, False, lambda env: v)
        if v is None:
            return self._mk(node, NULL, False, lambda env: None)
        raise self.err(node, f"literal {self.src(node)!r} is not allowed (numbers, strings, True/False, None)")

    def _dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return ".".join([node.id, *reversed(parts)])
        return None

    def _field(self, node: ast.AST) -> Compiled:
        name = self._dotted(node)
        if name is None:
            raise self.err(node, f"{self.src(node)!r} is not a field name")
        spec = self.fields.get(name)
        if spec is None:
            ns = name.split(".")[0]
            same = sorted(f for f in self.fields if f.startswith(ns + "."))
            listed = ", ".join(same or sorted(self.fields))
            raise self.err(node, f"unknown field {name!r}; the fields there are: {listed}")
        if name not in self.used:
            self.used.append(name)
        return self._mk(node, spec.type, spec.per_row, lambda env: env.get(name), spec.stage)

    _Name = _field
    _Attribute = _field

    # ---- operators ----------------------------------------------------------------------------
    def _BoolOp(self, node: ast.BoolOp) -> Compiled:
        parts = [self.build(v) for v in node.values]
        for v, p in zip(node.values, parts):
            if p.type != BOOL:
                raise self.err(v, f"{'and' if isinstance(node.op, ast.And) else 'or'} needs true/false operands; "
                                  f"{self.describe(v, p)} is not")
        fns = [p.fn for p in parts]
        op = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def fn(env):
            out = fns[0](env)
            for f in fns[1:]:
                out = op(out, f(env))
            return out
        return self._mk(node, BOOL, any(p.per_row for p in parts), fn, _stage(parts))

    def _UnaryOp(self, node: ast.UnaryOp) -> Compiled:
        p = self.build(node.operand)
        if isinstance(node.op, ast.Not):
            if p.type != BOOL:
                raise self.err(node, f"not needs a true/false operand; {self.describe(node.operand, p)} is not")
            f = p.fn
            return self._mk(node, BOOL, p.per_row, lambda env: np.logical_not(f(env)), p.stage)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            if p.type != NUM:
                raise self.err(node, f"unary minus needs a number; {self.describe(node.operand, p)} is not")
            f, sign = p.fn, -1.0 if isinstance(node.op, ast.USub) else 1.0
            return self._mk(node, NUM, p.per_row, lambda env: sign * f(env), p.stage)
        raise self.err(node, f"operator {type(node.op).__name__} is not allowed")

    def _BinOp(self, node: ast.BinOp) -> Compiled:
        if isinstance(node.op, ast.RShift):  # `contains`, rewritten by rewrite_contains
            return self._membership(node, node.right, node.left, negate=False)
        fn_op = _ARITH.get(type(node.op))
        if fn_op is None:
            raise self.err(node, f"operator {type(node.op).__name__} is not allowed (only + - * /)")
        a, b = self.build(node.left), self.build(node.right)
        for side, c in ((node.left, a), (node.right, b)):
            if c.type != NUM:
                raise self.err(node, f"type mismatch: {_SYMBOL[type(node.op)]} needs numbers; "
                                     f"{self.describe(node.left, a)} {_SYMBOL[type(node.op)]} {self.describe(node.right, b)}")
        fa, fb = a.fn, b.fn

        def fn(env):
            with np.errstate(divide="ignore", invalid="ignore"):
                return fn_op(fa(env), fb(env))
        return self._mk(node, NUM, a.per_row or b.per_row, fn, _stage([a, b]))

    def _Call(self, node: ast.Call) -> Compiled:
        if not (isinstance(node.func, ast.Name) and node.func.id == "len") or len(node.args) != 1 or node.keywords:
            raise self.err(node, f"call {self.src(node)!r} is not allowed (only len(<list field>))")
        p = self.build(node.args[0])
        if p.type != LIST:
            raise self.err(node, f"len() needs a list field; {self.describe(node.args[0], p)} is not")
        f = p.fn

        def fn(env):
            v = f(env)
            return v.lengths().astype(np.float64) if isinstance(v, RowLists) else float(len(v))
        return self._mk(node, NUM, p.per_row, fn, p.stage)

    def _Compare(self, node: ast.Compare) -> Compiled:
        parts = []
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            parts.append(self._compare_one(node, left, op, right))
            left = right
        if len(parts) == 1:
            return parts[0]
        fns = [p.fn for p in parts]

        def fn(env):
            out = fns[0](env)
            for f in fns[1:]:
                out = np.logical_and(out, f(env))
            return out
        return self._mk(node, BOOL, any(p.per_row for p in parts), fn, _stage(parts))

    def _compare_one(self, node, left, op, right) -> Compiled:
        if isinstance(op, (ast.In, ast.NotIn)):
            return self._membership(node, left, right, negate=isinstance(op, ast.NotIn))
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.err(node, "'is' / 'is not' only compare with None (a missing value)")
            a = self.build(left)
            fa, neg = a.fn, isinstance(op, ast.IsNot)
            return self._mk(node, BOOL, a.per_row, lambda env: np.logical_xor(_isnull(fa(env)), neg), a.stage)
        a, b = self.build(left), self.build(right)
        sym = _SYMBOL.get(type(op), type(op).__name__)
        if NULL in (a.type, b.type):
            raise self.err(node, f"compare with None using 'is None' / 'is not None', not {sym}")
        if a.type != b.type or a.type == LIST:
            raise self.err(node, f"type mismatch: {self.describe(left, a)} {sym} {self.describe(right, b)}")
        if a.type != NUM and not isinstance(op, (ast.Eq, ast.NotEq)):
            raise self.err(node, f"{sym} compares numbers only; {self.describe(left, a)} {sym} {self.describe(right, b)}")
        f_op, fa, fb = _CMP[type(op)], a.fn, b.fn
        if a.type == NUM:
            def fn(env):
                with np.errstate(invalid="ignore"):
                    return f_op(fa(env), fb(env))
        else:  # text (None-safe: None == "x" is False, != is True)
            eq = isinstance(op, ast.Eq)

            def fn(env):
                x, y = fa(env), fb(env)
                if not isinstance(x, np.ndarray) and not isinstance(y, np.ndarray):
                    return (x == y) if eq else (x != y)
                res = np.asarray(x == y if isinstance(x, np.ndarray) else y == x, dtype=bool)
                return res if eq else ~res
        return self._mk(node, BOOL, a.per_row or b.per_row, fn, _stage([a, b]))

    def _membership(self, node, item_node, coll_node, negate: bool) -> Compiled:
        item = self.build(item_node)
        if isinstance(coll_node, (ast.List, ast.Tuple, ast.Set)):
            values = []
            for elt in coll_node.elts:
                if not isinstance(elt, ast.Constant) or elt.value is None or isinstance(elt.value, bool):
                    raise self.err(elt, f"a list after 'in' holds number or text literals; {self.src(elt)!r} is not one")
                t = NUM if isinstance(elt.value, (int, float)) else STR
                if t != item.type:
                    raise self.err(elt, f"type mismatch: {self.describe(item_node, item)} in a list holding "
                                        f"{self.src(elt)!r} ({t})")
                values.append(float(elt.value) if t == NUM else elt.value)
            if item.type not in (NUM, STR):
                raise self.err(node, f"'in' needs a number or text on the left; {self.describe(item_node, item)}")
            fi, vals, vset = item.fn, np.array(values, dtype=np.float64 if item.type == NUM else object), set(values)

            def fn(env):
                x = fi(env)
                hit = np.isin(x, vals) if isinstance(x, np.ndarray) else (x in vset)
                return np.logical_not(hit) if negate else hit
            return self._mk(node, BOOL, item.per_row, fn, item.stage)
        coll = self.build(coll_node)
        if coll.type != LIST:
            hint = " (an imported CSV column is a list when its values use the separator '|')" \
                if coll.type == STR else ""
            raise self.err(node, f"membership needs a list field or a [literal, ...] list; "
                                 f"{self.describe(coll_node, coll)} is not a list{hint}")
        if item.type != STR:
            raise self.err(node, f"type mismatch: list fields hold text; {self.describe(item_node, item)} is not text")
        fi, fc = item.fn, coll.fn

        def fn(env):
            x, lists = fi(env), fc(env)
            if isinstance(lists, RowLists):
                hit = lists.contains_rows(x) if isinstance(x, np.ndarray) else lists.contains_scalar(x)
            elif isinstance(x, np.ndarray):
                hit = np.isin(x, np.array(lists, dtype=object)) if lists else np.zeros(len(x), bool)
            else:
                hit = x is not None and str(x) in lists
            return np.logical_not(hit) if negate else hit
        return self._mk(node, BOOL, item.per_row or coll.per_row, fn, _stage([item, coll]))


def _stage(parts) -> str:
    return "ranking" if any(p.stage == "ranking" for p in parts) else "eligibility"


def compile_expr(text: str, fields: Mapping[str, FieldSpec]) -> Compiled:
    """Parse, check and compile one rule expression (must be true/false); ExprError on any problem."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("the expression is empty")
    src = rewrite_contains(text)
    # inside parentheses a rule may span lines; the opening one sits on its own line, so every
    # node keeps the user's columns and its line is one more than the user's
    wrapped = "(\n" + src + "\n)"
    n_lines = src.count("\n") + 1
    try:
        tree = ast.parse(wrapped, mode="eval")
    except SyntaxError as exc:
        line = (exc.lineno or 2) - 1
        col = exc.offset or 1
        if line < 1 or line > n_lines:  # at the wrapper: the user's text ended too early
            line, col = n_lines, len(src.split("\n")[-1]) + 1
        raise ExprError(f"syntax error: {exc.msg}", line, col) from None
    comp = _Compiler(wrapped, fields)
    out = comp.build(tree.body)
    if out.type != BOOL:
        raise ExprError(f"a rule must be true or false (true = the candidate fails); "
                        f"{text.strip()!r} is a {out.type}", 1, 1)
    out.text = text.strip()
    out.fields = tuple(comp.used)
    return out
