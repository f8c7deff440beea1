"""A stateless stage's expressions as an :class:`~sqlstream.operators.arrow_program.ArrowProgram`,
where pyarrow.compute gives exactly what DataFusion gives.

Compiled (anything else leaves the stage to DataFusion alone):

* column references (quoted: exact name; unquoted: lower case, DataFusion's rule),
  integer literals within BIGINT (typed BIGINT), decimal literals (DOUBLE), string
  and boolean literals;
* ``+ - *`` and unary minus over signed integers and floats: integers wrap on
  overflow in both engines, floats follow IEEE 754 in both;
* ``= <> < <= > >=`` between numbers, between strings, between booleans; a batch
  with NaN in a float operand goes to DataFusion (which orders NaN above every
  number and equal to itself);
* ``AND``, ``OR``, ``NOT`` (Kleene logic, as SQL), ``IS [NOT] NULL``, parentheses.

Operand types are restricted to pairs whose common type is the same in both engines
(equal types; two signed integers; DOUBLE with a signed integer or REAL): the
program's output types are then checked against DataFusion's planned schema by the
:class:`~sqlstream.operators.datafusion_program.DataFusionProgram` that holds it.
``tests/unit/test_arrow_program.py`` runs random expressions over random batches
(NULLs, NaN, -0.0, extremes) through both engines and compares the results.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from sqlstream.batches import empty_batch
from sqlstream.operators.arrow_program import ArrowProgram, Call, Column, Compare, Literal, ToDouble

__all__ = ["arrow_program"]

_ARITHMETIC = {exp.Add: pc.add, exp.Sub: pc.subtract, exp.Mul: pc.multiply}  # wrapping, as DataFusion
_COMPARISONS = {exp.EQ: pc.equal, exp.NEQ: pc.not_equal, exp.LT: pc.less, exp.LTE: pc.less_equal,
                exp.GT: pc.greater, exp.GTE: pc.greater_equal}
_LOGIC = {exp.And: pc.and_kleene, exp.Or: pc.or_kleene}
_SIGNED = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
_FLOATS = (pa.float32(), pa.float64())
_PLAIN = (*_SIGNED, *_FLOATS, pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(), pa.bool_(), pa.string(),
          pa.binary(), pa.date32())  # column types passed through as they are


class _Unsupported(Exception):
    pass


def arrow_program(outputs: Sequence[exp.Expr], condition: exp.Expr | None, schema: pa.Schema) -> ArrowProgram | None:
    """``SELECT outputs FROM __input WHERE condition`` over ``schema`` as Arrow kernels,
    or None when some expression is not one the Arrow path computes like DataFusion."""
    compiler = _Compiler(schema)
    try:
        compiled = [compiler.compile(e) for e in outputs]
        where = compiler.compile(condition) if condition is not None else None
        if where is not None and compiler.type_of(where) != pa.bool_():
            return None
    except _Unsupported:
        return None
    return ArrowProgram(compiled, where)


class _Compiler:
    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.empty = empty_batch(schema)

    def type_of(self, node) -> pa.DataType:
        try:
            return node.evaluate(self.empty).type
        except (pa.ArrowException, TypeError) as error:
            raise _Unsupported(str(error)) from error

    def compile(self, node: exp.Expr):
        if isinstance(node, exp.Paren):
            return self.compile(node.this)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, (exp.Literal, exp.Boolean)):
            return Literal(_literal(node))
        if isinstance(node, exp.Neg):
            operand = self.compile(node.this)
            if isinstance(node.this, exp.Literal):  # -5 is a literal to DataFusion too
                return Literal(pc.negate(operand.value))
            self._numbers(operand)
            return Call(pc.negate, operand)
        if type(node) in _ARITHMETIC:
            left, right = self.compile(node.this), self.compile(node.expression)
            self._numbers(left, right)
            return Call(_ARITHMETIC[type(node)], *self._doubles(left, right))
        if type(node) in _COMPARISONS:
            left, right = self.compile(node.this), self.compile(node.expression)
            self._comparable(left, right)
            return Compare(_COMPARISONS[type(node)], *self._doubles(left, right))
        if type(node) in _LOGIC:
            left, right = self.compile(node.this), self.compile(node.expression)
            self._booleans(left, right)
            return Call(_LOGIC[type(node)], left, right)
        if isinstance(node, exp.Not):
            operand = self.compile(node.this)
            self._booleans(operand)
            return Call(pc.invert, operand)
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            operand = self.compile(node.this)
            return Call(pc.is_valid if node.args.get("negate") else pc.is_null, operand)
        raise _Unsupported(type(node).__name__)

    def _column(self, node: exp.Column) -> Column:
        if node.args.get("table") or not isinstance(node.this, exp.Identifier):
            raise _Unsupported("qualified column")
        name = node.name if node.this.args.get("quoted") else node.name.lower()
        names = self.schema.names
        if names.count(name) != 1:
            raise _Unsupported("ambiguous column")
        field = self.schema.field(names.index(name))
        if field.type not in _PLAIN:
            raise _Unsupported(str(field.type))
        return Column(names.index(name), field.type)

    def _numbers(self, *operands) -> None:
        types = [self.type_of(o) for o in operands]
        if not all(t in _SIGNED or t in _FLOATS for t in types) or not _same_common_type(types):
            raise _Unsupported("arithmetic types")

    def _comparable(self, left, right) -> None:
        a, b = self.type_of(left), self.type_of(right)
        if a in _SIGNED + _FLOATS and b in _SIGNED + _FLOATS and _same_common_type([a, b]):
            return
        if a == b and a in (pa.string(), pa.bool_()):
            return
        raise _Unsupported("comparison types")

    def _doubles(self, left, right) -> tuple:
        """Integers meeting a float: DOUBLE, as DataFusion casts them."""
        types = (self.type_of(left), self.type_of(right))
        if not any(t in _FLOATS for t in types):
            return left, right
        return tuple(ToDouble(o) if t in _SIGNED else o for o, t in zip((left, right), types))

    def _booleans(self, *operands) -> None:
        if any(self.type_of(o) != pa.bool_() for o in operands):
            raise _Unsupported("logic on non-booleans")


def _same_common_type(types: list[pa.DataType]) -> bool:
    """Pairs whose common type DataFusion and Arrow agree on."""
    if len(set(types)) == 1:
        return True
    if all(t in _SIGNED for t in types):
        return True
    return pa.float64() in types and all(t in _SIGNED or t in _FLOATS for t in types)


def _literal(node: exp.Expr) -> pa.Scalar:
    if isinstance(node, exp.Boolean):
        return pa.scalar(bool(node.this), pa.bool_())
    if node.is_string:
        return pa.scalar(node.name, pa.string())
    text = node.name
    if text.isdigit():
        value = int(text)
        if value > 2**63 - 1:
            raise _Unsupported("integer literal beyond BIGINT")
        return pa.scalar(value, pa.int64())
    if not all(c.isdigit() or c == "." for c in text) or text.count(".") != 1:
        raise _Unsupported("numeric literal form")  # (exponents, hex: left to DataFusion)
    return pa.scalar(float(text), pa.float64())
