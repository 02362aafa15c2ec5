"""The questions users ask: how many laws (`count`, `exact_count`, `from_model_count`, on
generic `points`), which ones (`find`), is this one a law (`verify`, with the law `expressions`)."""
