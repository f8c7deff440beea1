"""Model calls written as table functions, parsed for the sqlstream dialect: Flink's
``ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(a, b))`` and BigQuery's
``ML.PREDICT(MODEL m, TABLE t | (SELECT ...))`` become a :class:`ModelPredict` FROM item
(``sqlstream/plan/model_predict.py`` plans it as ``SELECT *, m(...) FROM t``). An
options argument (Flink's config map, BigQuery's STRUCT) is a syntax error: model
options belong to ``CREATE FUNCTION ... WITH (...)``.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokens import TokenType

__all__ = ["ModelPredict", "ModelPredictParsing", "model_predict_sql"]


class ModelPredict(exp.Expression):
    """A model applied to a relation in FROM: ``spelling`` is ``ML_PREDICT`` (Flink:
    ``columns`` from ``DESCRIPTOR(...)``) or ``ML.PREDICT`` (BigQuery: no ``columns``,
    the model's inputs are taken by name). ``this`` is the input relation (Table or
    Subquery), ``model`` the function's Identifier."""

    arg_types = {"this": True, "model": True, "columns": False, "spelling": True, "alias": False}

    @property
    def alias_or_name(self) -> str:
        alias = self.args.get("alias")
        return alias.name if alias is not None else ""



class ModelPredictParsing:
    """Parser methods for :class:`ModelPredict` (mixed into the dialect's parser, whose
    ``_parse_table`` calls :meth:`_at_model_predict` and :meth:`_parse_model_predict`)."""

    def _at_model_predict(self) -> str | None:
        """``ML_PREDICT(`` or ``ML.PREDICT(`` at the cursor: its spelling."""
        ahead = self._tokens[self._index:self._index + 4]
        words = [t.text.upper() if t.token_type != TokenType.STRING else "" for t in ahead]
        if words[:2] == ["ML_PREDICT", "("]:
            return "ML_PREDICT"
        if words[:4] == ["ML", ".", "PREDICT", "("]:
            return "ML.PREDICT"
        return None

    def _parse_model_predict(self, spelling: str, kwargs: dict) -> ModelPredict:
        token = self._curr
        self._advance(2 if spelling == "ML_PREDICT" else 4)
        if spelling == "ML_PREDICT":
            relation = self._parse_model_input(spelling)
            self._expect_comma(spelling, "MODEL m")
            model = self._parse_model_name(spelling)
            self._expect_comma(spelling, "DESCRIPTOR(columns)")
            if not self._match_text_seq("DESCRIPTOR"):
                self.raise_error("ML_PREDICT needs the model's input columns as DESCRIPTOR(a, b, ...)")
            columns = self._parse_wrapped_csv(self._parse_column)
        else:
            model = self._parse_model_name(spelling)
            self._expect_comma(spelling, "TABLE t or (SELECT ...)")
            relation = self._parse_model_input(spelling)
            columns = None
        if self._curr is not None and self._curr.token_type == TokenType.COMMA:
            self.raise_error(
                f"{spelling}'s options argument is not supported: give model options in "
                "CREATE FUNCTION name AS MODEL 'file.onnx' WITH (...)",
                self._curr,
            )
        self._match_r_paren()
        node = ModelPredict(this=relation, model=model, columns=columns, spelling=spelling)
        node.meta.update(line=token.line, col=token.col, start=token.start, end=token.end)
        alias = self._parse_table_alias()
        if alias:
            node.set("alias", alias)
        if kwargs.get("joins"):
            for join in self._parse_joins():
                node.append("joins", join)
        return node

    def _parse_model_input(self, spelling: str) -> exp.Expr:
        if self._match(TokenType.TABLE):
            relation = self._parse_table_parts()
        elif self._match(TokenType.L_PAREN, advance=False):
            relation = self._parse_select(table=True)
        else:
            relation = None
        if relation is None:
            self.raise_error(f"{spelling} needs its input as TABLE t or (SELECT ...)")
        return relation

    def _parse_model_name(self, spelling: str) -> exp.Identifier:
        if not self._match_text_seq("MODEL"):
            self.raise_error(f"{spelling} needs the model as MODEL name")
        name = self._parse_id_var(any_token=False)
        if name is None:
            self.raise_error(f"{spelling} needs the model as MODEL name")
        return name

    def _expect_comma(self, spelling: str, what: str) -> None:
        if not self._match(TokenType.COMMA):
            self.raise_error(f"{spelling} expects {what} next")


def model_predict_sql(self, node: ModelPredict) -> str:
    """The generator's SQL for a :class:`ModelPredict` (SHOW VIEWS / SINKS)."""
    relation = node.this
    source = self.sql(relation) if isinstance(relation, exp.Subquery) else f"TABLE {self.sql(relation)}"
    model = f"MODEL {self.sql(node, 'model')}"
    if node.args["spelling"] == "ML_PREDICT":
        columns = ", ".join(self.sql(c) for c in node.args.get("columns") or [])
        sql = f"ML_PREDICT({source}, {model}, DESCRIPTOR({columns}))"
    else:
        sql = f"ML.PREDICT({model}, {source})"
    alias = self.sql(node, "alias")
    return f"{sql} AS {alias}" if alias else sql
