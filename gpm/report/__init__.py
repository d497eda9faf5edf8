"""``gpm report``: what the GPUs did over a range, built from history.

Layers: ``period`` (the range), ``rollup`` (one row per GPU and minute, and
how it is computed and stored beside archived days), ``source`` (the rollup
and the raw rows it does not cover, from SQLite and the Parquet archive),
``build`` (the figures, pure functions), ``usage`` (what used the GPUs),
``hourly`` (each GPU's local hours), ``summaries`` (whole ISO weeks kept for
the trend), ``make`` (the report from all of them), ``sections`` (their
names), ``render`` (text, markdown, json, csv) and ``html`` (one page of
charts from the json: ``figures``, ``charts_gpu``, ``charts_use``, drawn by
``svg``). Nothing here imports Click, and this file imports nothing, so
``gpm --help`` can read the section names without loading the report.
"""
