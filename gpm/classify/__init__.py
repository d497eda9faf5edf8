"""Process classification: what is each GPU process doing?

Layers, cheapest first and each usable alone:

- ``facts``: what psutil says about a running process (or what a JSON line says);
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
    (ignoring case, it matches letters such as "ſ" for "s"). A pattern asked
    often (a long-lived process) is compiled anyway: then it is quicker.
    """

    COMPILE_AFTER = 64  # questions answered by the needles

    def __init__(self, pattern: str, flags: int = 0, needles: tuple[str, ...] = ()):
        self.pattern, self.flags, self.needles = pattern, flags, needles
        self._re: re.Pattern | None = None
        self._asked = 0

    def compiled(self) -> re.Pattern:
        if self._re is None:
            self._re = re.compile(self.pattern, self.flags)
            # From now on the pattern's own methods answer, without the needles.
            self.match, self.search, self.sub, self.split = (
                self._re.match, self._re.search, self._re.sub, self._re.split)
        return self._re

    def cannot_match(self, text: str) -> bool:
        if not self.needles or not text.isascii():
            return False
        if self.flags & re.IGNORECASE:
            text = text.lower()
        for needle in self.needles:
            if needle in text:
                return False
        return True

    def _for(self, text: str) -> re.Pattern | None:
        """The compiled pattern, or None when the needles say ``text`` cannot match."""
        self._asked += 1
        if self._asked <= self.COMPILE_AFTER and self.cannot_match(text):
            return None
        return self.compiled()

    def match(self, text: str, *pos: int) -> re.Match | None:
        r = self._for(text)
        return r and r.match(text, *pos)

    def search(self, text: str, *pos: int) -> re.Match | None:
        r = self._for(text)
        return r and r.search(text, *pos)

    def sub(self, repl, text: str) -> str:
        r = self._for(text)
        return text if r is None else r.sub(repl, text)

    def split(self, text: str) -> list[str]:
        r = self._for(text)
        return [text] if r is None else r.split(text)
