"""Tools that produce gpm's generated files (``completions/``, ``man/``).

``python -m gpm.devtools.generate`` regenerates both from the Click app.
"""
