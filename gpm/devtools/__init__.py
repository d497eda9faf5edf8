"""gpm's command tree rendered as shell completions and man pages.

``gpm install completions|man`` installs them; ``python tools/generate.py``
writes them into the checkout's ``completions/`` and ``man/``.
"""
