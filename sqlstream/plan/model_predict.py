"""Model calls written as table functions, planned as the plain call they stand for.

* Flink: ``ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(a, b))`` is
  ``SELECT *, m(a, b) AS <output> FROM t``;
* BigQuery: ``ML.PREDICT(MODEL m, TABLE t | (SELECT ...))`` passes the columns named
  like the model's inputs and names the outputs ``predicted_<output>``:
  ``SELECT *, m(x) AS predicted_y FROM t``.

The output columns are the model's outputs: one column for a single output, one per
field for a model returning a STRUCT (``m(a, b).label AS label``, ...). An output whose
name an input column already has is an error (the plain call lets you choose a name).
"""

from __future__ import annotations

from sqlglot import exp

from sqlstream.errors import SqlAnalysisError, did_you_mean
from sqlstream.plan.relation import PlannerContext, Relation
from sqlstream.sql.model_predict import ModelPredict
from sqlstream.sql.statements import normalize_name

__all__ = ["plan_model_predict"]


def plan_model_predict(ctx: PlannerContext, node: ModelPredict, udf_planner) -> Relation:
    """``node`` as ``SELECT *, m(...) ... FROM <input>`` (see the module docstring)."""
    spelling = node.args["spelling"]
    ident = node.args["model"]
    name = normalize_name(ident)
    model = udf_planner.model(name) if udf_planner is not None else None
    if model is None:
        models = udf_planner.model_names() if udf_planner is not None else []
        raise SqlAnalysisError(
            f"{spelling}: '{name}' is not a model function",
            location=ctx.loc(ident),
            hint=did_you_mean(name, models) or ("model functions: " + ", ".join(models) if models
                                                else "CREATE FUNCTION name AS MODEL 'file.onnx' first"),
        )
    relation = node.this
    inputs = {c.name for c in ctx.plan_factor(relation.copy()).scope.columns if not c.virtual}
    columns = node.args.get("columns")
    if columns is None:  # BigQuery: the model's inputs, by name
        missing = [n for n in model.input_names if normalize_name(exp.to_identifier(n)) not in inputs]
        if missing:
            raise SqlAnalysisError(
                f"ML.PREDICT passes the columns named like model {name}'s inputs; its input has no column '{missing[0]}'",
                location=ctx.loc(node),
                hint=f"name the column in the query (SELECT ... AS {missing[0]}), or write "
                     f"ML_PREDICT(TABLE t, MODEL {name}, DESCRIPTOR(columns)) or SELECT *, {name}(columns) FROM t",
            )
        columns = [exp.column(exp.to_identifier(n, quoted=True)) for n in model.input_names]
    prefix = "predicted_" if spelling == "ML.PREDICT" else ""
    call = exp.Anonymous(this=name, expressions=[c.copy() for c in columns])
    call.meta.update(ident.meta)
    fields = model.output_fields
    outputs = []
    for field in fields:
        value = exp.Dot(this=call.copy(), expression=exp.to_identifier(field, quoted=True)) if len(fields) > 1 else call
        column = f"{prefix}{field}"
        if column in inputs:
            raise SqlAnalysisError(
                f"{spelling}: model {name}'s output '{column}' has the name of an input column",
                location=ctx.loc(node),
                hint=f"rename the input column, or write SELECT *, {name}(...) AS other_name FROM ...",
            )
        outputs.append(exp.alias_(value, exp.to_identifier(column, quoted=True)))
    select = exp.select(exp.Star(), *outputs).from_(relation.copy())
    subquery = exp.Subquery(this=select, alias=node.args.get("alias"))
    return ctx.plan_factor(subquery)
