"""Process classification: what is each GPU process doing?

Layers, cheapest first and each usable alone:

- ``facts``: what ``/proc`` says about a process (or what a JSON line says);
- ``steam``: Steam library folders and app manifests -> game names;
- ``rules``: the pure function ``classify(facts, context)`` with built-in and
  user rules, shared by live classification and ``gpm classify``;
- ``redact``: command lines with secrets removed, before storing or printing;
- ``live``: the sampler's enricher that ties the above together.
"""

import re

CATEGORIES = ("gaming", "llm_inference", "ml_training", "desktop", "general_compute")


class LazyPattern:
    """A regular expression compiled on its first use, and skipped when it cannot match.

    The rules and the redactor hold some thirty patterns; compiled at import
    they cost every cold ``gpm sample`` about 4 ms, mostly for cases (Steam
    tools, Windows games, secrets of one shape) that it never meets.
    ``needles``: literal strings of which any match contains one (lower case
    when the pattern ignores case); ASCII text holding none of them is
    answered without the pattern. Other text always goes to the pattern
    (ignoring case, it matches letters such as "ſ" for "s").
    """

    def __init__(self, pattern: str, flags: int = 0, needles: tuple[str, ...] = ()):
        self.pattern, self.flags, self.needles = pattern, flags, needles
        self._re: re.Pattern | None = None

    def compiled(self) -> re.Pattern:
        if self._re is None:
            self._re = re.compile(self.pattern, self.flags)
        return self._re

    def cannot_match(self, text: str) -> bool:
        if not self.needles or not text.isascii():
            return False
        if self.flags & re.IGNORECASE:
            text = text.lower()
        return not any(n in text for n in self.needles)

    def match(self, text: str, *pos: int) -> re.Match | None:
        return None if self.cannot_match(text) else self.compiled().match(text, *pos)

    def search(self, text: str, *pos: int) -> re.Match | None:
        return None if self.cannot_match(text) else self.compiled().search(text, *pos)

    def sub(self, repl, text: str) -> str:
        return text if self.cannot_match(text) else self.compiled().sub(repl, text)

    def split(self, text: str) -> list[str]:
        return [text] if self.cannot_match(text) else self.compiled().split(text)
