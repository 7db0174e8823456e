"""Typed query -> SQL text + bound parameters (pure functions, one module per query type).

Each module exposes ``compile_<type>(query) -> Compiled`` and ``shape(query, rows) -> dict`` (rows as the
engine returns them -> the Amplitude response's ``data``).
"""
