"""memberlink's pipeline stages: one module per stage, pure functions on polars frames."""
