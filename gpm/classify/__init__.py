"""Process classification: what is each GPU process doing?

Layers, cheapest first and each usable alone:

- ``facts``: what psutil says about a running process (or what a JSON line says);
- ``steam``: Steam library folders and app manifests -> game names;
- ``rules``: the pure function ``classify(facts, context)`` with the built-in
  rules, shared by live classification and ``gpm classify``; what it reads:
  ``cmdline`` (program names, options), ``known_programs`` (tables of names),
  ``process_view`` (facts digested once), ``steam_signs`` (app ids, Steam
  folders) and ``user_rules`` (``[[classify.rules]]``);
- ``redact``: command lines with secrets removed, before storing or printing;
- ``live``: the sampler's enricher that ties the above together.
"""

CATEGORIES = ("gaming", "llm_inference", "ml_training", "desktop", "general_compute")
