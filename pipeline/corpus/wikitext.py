"""MediaWiki markup -> plain prose, keeping numbers, units and formulas.

:func:`clean_wikitext` walks the node tree that ``mwparserfromhell`` builds
and renders only what a reader of the article would see as prose:

* dropped: templates in general (infoboxes, navboxes, citations, hatnotes),
  ``<ref>`` tags with their content, tables, File:/Image:/Category: links,
  comments, galleries, and the non-prose sections ("References",
  "External links", "See also", ...);
* kept as text: wikilink and external-link labels, bold/italic text, inner
  text of HTML tags, headings (as their own lines), ``<math>``/``<chem>``/
  ``<ce>`` source, and value templates such as ``{{convert}}``, ``{{val}}``,
  ``{{math}}``, ``{{mvar}}``, ``{{sfrac}}`` and ``{{nowrap}}``.

It never raises: on markup the renderer cannot handle it falls back to
``strip_code()`` and, failing that, to a crude tag strip.

>>> clean_wikitext("'''Light''' travels at {{convert|299792|km|mi}} per second"
...                "<ref>{{cite web|url=http://x}}</ref>; <math>E = mc^2</math>.")
'Light travels at 299792 km per second; E = mc^2.'
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Callable

import mwparserfromhell
from mwparserfromhell.nodes import (Argument, Comment, ExternalLink, Heading, HTMLEntity, Node,
                                    Tag, Template, Text, Wikilink)
from mwparserfromhell.wikicode import Wikicode

logger = logging.getLogger(__name__)

__all__ = ["clean_wikitext", "NON_PROSE_SECTIONS"]

#: Section titles (lower-case) whose whole section, subsections included, is dropped.
NON_PROSE_SECTIONS = frozenset({
    "references", "reference", "external links", "external link", "see also",
    "further reading", "notes", "bibliography", "sources", "footnotes", "citations",
    "notes and references", "references and notes", "works cited", "selected bibliography",
    "general references", "cited sources", "explanatory notes", "gallery",
})

# Link namespaces whose links are not prose (images, categories).
_DROP_LINK_NAMESPACES = ("file:", "image:", "media:", "category:")
# Text-less interlanguage links such as [[de:Paris]].
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*:")

# Tags whose content is markup-free source text, kept verbatim.
_VERBATIM_TAGS = frozenset({"math", "chem", "ce", "nowiki", "pre", "code", "syntaxhighlight",
                            "source", "tt", "var", "samp", "kbd"})
# Tags dropped together with their content.
_DROP_TAGS = frozenset({"ref", "references", "gallery", "timeline", "imagemap", "graph",
                        "mapframe", "maplink", "templatedata", "templatestyles", "score",
                        "categorytree", "inputbox", "includeonly", "indicator", "section",
                        "table", "tr", "td", "th", "caption", "style", "script", "hiero"})
_BREAK_TAGS = frozenset({"br", "hr", "p"})
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})

# Templates rendered as a fixed string.
_SYMBOLS = {
    "nbsp": " ", "spaces": " ", "space": " ", "thinsp": " ", "ndash": "–", "mdash": "—",
    "snd": " – ", "spnd": " – ", "spaced ndash": " – ", "spd": " – ", "dash": "—", "pi": "π",
    "=": "=", "!": "|", "!!": "||", "'": "'", "\"": "\"", "·": " · ", "dot": " · ",
    "middot": "·", "bull": " • ", "•": " • ", "degree": "°", "deg": "°", "pm": "±", "±": "±",
    "plusminus": "±", "minus": "−", "times": "×", "okina": "ʻ", "hbar": "ħ", "h-bar": "ħ",
    "intmath": "∫",
}
# Templates rendered as their first positional parameter ("wrappers").
_FIRST_PARAM = frozenset({
    "math", "mvar", "nowrap", "nobr", "nobreak", "no wrap", "tmath", "mathcal", "mathbf",
    "mathbb", "mathit", "mathrm", "mathsf", "mathfrak", "math-font", "mathscr", "bold", "italic",
    "em", "strong", "var", "code", "small", "smaller", "big", "bigger", "large", "resize",
    "overline", "underline", "strikethrough", "abbr", "abbrlink", "ill", "interlanguage link",
    "nihongo", "not a typo", "proper name", "sic", "lang-en", "serif", "sans-serif", "smallcaps",
    "small caps", "sc", "allcaps", "mono", "monospace", "quote", "blockquote", "cquote",
    "quotation", "center", "centre", "linktext", "section link", "vec", "font", "color",
    "colour", "keypress", "kbd", "chem2", "ce", "tooltip", "visible anchor", "anchored",
    "highlight", "notatypo", "lit", "literally", "gloss", "wikt-lang",
})
# Templates rendered as their second positional parameter (language first).
_SECOND_PARAM = frozenset({"lang", "langx", "transl", "transliteration", "script"})
# Templates whose positional parameters are joined with ", ".
_LISTS = frozenset({"hlist", "flatlist", "plainlist", "unbulleted list", "ubl", "ubil",
                    "bulleted list", "bull list", "enum"})
# Parser functions of the form {{name:value}} rendered as their value.
_TEXT_PARSER_FUNCTIONS = ("formatnum", "lc", "uc", "lcfirst", "ucfirst", "padleft", "padright")

# Units shown differently from their {{convert}} code.
_UNITS = {
    "C": "°C", "F": "°F", "degC": "°C", "degF": "°F", "km2": "km²", "m2": "m²", "cm2": "cm²",
    "mm2": "mm²", "sqmi": "sq mi", "mi2": "sq mi", "sqft": "sq ft", "ft2": "sq ft", "m3": "m³",
    "cm3": "cm³", "km3": "km³", "ft3": "cu ft", "cuft": "cu ft", "kg/m3": "kg/m³",
    "g/cm3": "g/cm³", "m/s2": "m/s²", "ft/s2": "ft/s²", "acre": "acres",
}
# {{convert}} words separating the two ends of a range.
_RANGE_WORDS = {"-": "–", "–": "–", "to": " to ", "to(-)": " to ", "-to-": " to ",
                "and": " and ", "and(-)": " and ", "or": " or ", "x": " × ", "by": " by ",
                "+/-": " ± ", "±": " ± ", "&": " & ", "+": " + ", ", and": ", and ",
                ", or": ", or "}
_SCALES = {"3": "thousand", "6": "million", "9": "billion", "12": "trillion"}
_SCALED_UNIT = re.compile(r"^e(3|6|9|12)(.+)$")
_NUMBER = re.compile(r"^[-+−]?(?:\d[\d,]*)?(?:\.\d+)?(?:e[-+]?\d+)?(?:/\d+)?$", re.IGNORECASE)

_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t]")
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r" {2,}")
# "Paris ( ) is": brackets emptied by a dropped template; "f()" (no space before) stays.
_EMPTY_BRACKETS = re.compile(r"(?:(?<=\s)|^)\(\s*[,;]?\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;])(?=\s|$)")
_OPEN_BRACKET_SPACE = re.compile(r"\(\s*[,;]\s*")
_JUNK_LINE = re.compile(r"^[\s\-–—|*#:;,.()\[\]{}'\"!]*$")
_TABLE_LINE = re.compile(r"^\s*(?:\{\||\|\}|\|-|\|\+)")


def _unit(code: str) -> str:
    """How a {{convert}} unit code reads: ``"km2"`` -> ``"km²"``, ``"e6km"`` -> ``"million km"``.
    """
    match = _SCALED_UNIT.match(code)
    if match:
        return f"{_SCALES[match.group(1)]} {_UNITS.get(match.group(2), match.group(2))}"
    return _UNITS.get(code, code)


def _name(template: Template) -> str:
    """Normalized template name: ``{{ Convert }}`` -> ``"convert"``."""
    return " ".join(str(template.name).replace("_", " ").split()).lower()


def _positional(template: Template) -> list[Wikicode]:
    """Positional parameters (``|a|b`` or ``|1=a|2=b``) in order."""
    numbered: dict[int, Wikicode] = {}
    for param in template.params:
        key = str(param.name).strip()
        if key.isdigit():
            numbered[int(key)] = param.value
    return [numbered[k] for k in sorted(numbered)]


def _named(template: Template, *keys: str) -> Wikicode | None:
    """The value of the first of ``keys`` the template has, else ``None``."""
    for key in keys:
        if template.has(key):
            return template.get(key).value
    return None


class _Renderer:
    """Renders a parsed Wikicode tree to plain text; one instance per call."""

    def __init__(self) -> None:
        self._templates: dict[str, Callable[[Template], str]] = {
            "convert": self._convert, "cvt": self._convert,
            "val": self._val,
            "sfrac": self._frac, "frac": self._frac, "fraction": self._frac, "fract": self._frac,
            "sqrt": self._sqrt, "radic": self._sqrt,
            "e": lambda t: "×10^" + self._param(t, 0), "10^": lambda t: "10^" + self._param(t, 0),
            "sup": lambda t: "^" + self._param(t, 0), "sub": lambda t: self._param(t, 0),
            "chem": lambda t: "".join(self._params(t)),
            "circa": self._circa, "c.": self._circa, "ca.": self._circa,
            "as of": self._as_of,
            "bra": lambda t: "⟨" + self._param(t, 0) + "|",
            "ket": lambda t: "|" + self._param(t, 0) + "⟩",
            "braket": lambda t: "⟨" + "|".join(self._params(t)) + "⟩",
            "abs": lambda t: "|" + self._param(t, 0) + "|",
            "norm": lambda t: "‖" + self._param(t, 0) + "‖",
            "us$": lambda t: "US$" + self._param(t, 0),
        }
        for name in ("birth date", "death date", "start date", "end date", "birth date and age",
                     "death date and age", "start date and age", "dob"):
            self._templates[name] = self._date
        for name in ("birth year and age", "death year and age"):
            self._templates[name] = lambda t: self._param(t, 0)

    # -- generic walking -------------------------------------------------

    def render(self, code: Wikicode | None) -> str:
        """Render ``code`` without section filtering."""
        if code is None:
            return ""
        return "".join(self._node(node) for node in code.nodes)

    def render_document(self, code: Wikicode) -> str:
        """Render a whole page, dropping non-prose sections and their subsections."""
        out: list[str] = []
        skip_below: int | None = None  # level of the dropped section being skipped
        for node in code.nodes:
            if isinstance(node, Heading):
                if skip_below is not None and node.level <= skip_below:
                    skip_below = None
                title = " ".join(self.render(node.title).split())
                if title.lower().rstrip(":") in NON_PROSE_SECTIONS:
                    skip_below = node.level
                    continue
                if skip_below is None:
                    out.append(f"\n\n{title}")  # the newline after it is in the next Text
                continue
            if skip_below is None:
                out.append(self._node(node))
        return "".join(out)

    def _node(self, node: Node) -> str:
        if isinstance(node, Text):
            return node.value
        if isinstance(node, Wikilink):
            return self._wikilink(node)
        if isinstance(node, Template):
            return self._template(node)
        if isinstance(node, Tag):
            return self._tag(node)
        if isinstance(node, HTMLEntity):
            return node.normalize()
        if isinstance(node, ExternalLink):
            if node.title is not None:
                return self.render(node.title)
            return "" if node.brackets else str(node.url)
        if isinstance(node, Heading):
            return "\n\n" + " ".join(self.render(node.title).split())
        if isinstance(node, (Comment, Argument)):
            return ""
        return ""

    def _params(self, template: Template) -> list[str]:
        """All positional parameters, rendered and stripped."""
        return [self.render(value).strip() for value in _positional(template)]

    def _param(self, template: Template, index: int) -> str:
        params = _positional(template)
        return self.render(params[index]).strip() if index < len(params) else ""

    # -- links and tags --------------------------------------------------

    def _wikilink(self, link: Wikilink) -> str:
        target = str(link.title).strip()
        lowered = target.lower()
        if lowered.startswith(_DROP_LINK_NAMESPACES):
            return ""
        if link.text is None:
            if _INTERLANGUAGE.match(target):
                return ""
            return self.render(link.title).lstrip(":").strip()
        text = self.render(link.text)
        if text.strip():
            return text
        # Pipe trick: [[Foo (bar)|]] shows "Foo", [[Help:Foo|]] shows "Foo".
        shown = target.lstrip(":").split(":", 1)[-1]
        return re.sub(r"\s*\([^)]*\)\s*$", "", shown).split(",")[0].strip()

    def _tag(self, tag: Tag) -> str:
        name = str(tag.tag).strip().lower()
        if name in _DROP_TAGS:
            return ""
        if name in _BREAK_TAGS:
            return "\n" + (self.render(tag.contents) if tag.contents is not None else "") + "\n"
        if tag.wiki_markup in ("*", "#", ":", ";"):  # list / indent markers
            return ""
        if tag.contents is None:
            return ""
        if name in _VERBATIM_TAGS:
            source = str(tag.contents)
            return source.strip() if name in ("math", "chem", "ce") else source
        inner = self.render(tag.contents)
        if name == "sup":
            stripped = inner.strip()
            if not stripped or stripped.lower() in _ORDINAL_SUFFIXES:
                return stripped
            return "^" + stripped
        if name in ("div", "blockquote", "poem", "center", "li", "dd", "dt", "ul", "ol", "dl"):
            return "\n" + inner + "\n"
        return inner

    # -- templates -------------------------------------------------------

    def _template(self, template: Template) -> str:
        name = _name(template)
        if ":" in name and not name.startswith("#"):
            func, _, rest = str(template.name).partition(":")
            if func.strip().lower() in _TEXT_PARSER_FUNCTIONS:
                return rest.strip()
            return ""
        if name in _SYMBOLS:
            return _SYMBOLS[name]
        handler = self._templates.get(name)
        if handler is not None:
            return handler(template)
        if name in _LISTS:
            return ", ".join(s for s in self._params(template) if s)
        if name in _FIRST_PARAM:
            value = _positional(template)[0] if _positional(template) else _named(
                template, "text", "quote")
            return self.render(value).strip() if value is not None else ""
        if name in _SECOND_PARAM or name.startswith("lang-"):
            index = 0 if name.startswith("lang-") else 1
            return self._param(template, index)
        return ""

    def _convert(self, template: Template) -> str:
        params = [str(v).strip() for v in _positional(template)]
        if not params:
            return ""
        out = [params[0]]
        i = 1
        while i + 1 < len(params) and params[i].lower() in _RANGE_WORDS:
            out.append(_RANGE_WORDS[params[i].lower()] + params[i + 1])
            i += 2
        if i < len(params):
            out.append(" " + _unit(params[i]))
            i += 1
            # Compound inputs: {{convert|5|ft|6|in|m}} -> "5 ft 6 in".
            while i + 1 < len(params) and params[i] and _NUMBER.match(params[i]):
                out.append(f" {params[i]} {_unit(params[i + 1])}")
                i += 2
        return "".join(out)

    def _val(self, template: Template) -> str:
        params = self._params(template)
        if not params:
            return ""

        def named(*keys: str) -> str:
            value = _named(template, *keys)
            return self.render(value).strip() if value is not None else ""

        text = named("p") + params[0]
        if len(params) >= 3:
            text += f"+{params[1].lstrip('+')}−{params[2].lstrip('-−')}"
        elif len(params) == 2:
            unc = params[1]
            text += unc if unc.startswith("(") else f"±{unc}"
        text += named("end")
        exponent = named("e")
        if exponent:
            text += f"×10^{exponent}"
        unit = named("u", "ul")
        per = named("up", "upl")
        if unit:
            text += f" {unit}"
        if per:
            text += f"/{per}"
        return text + named("s")

    def _frac(self, template: Template) -> str:
        parts = self._params(template)
        if len(parts) == 1:
            return f"1/{parts[0]}"
        if len(parts) == 2:
            return f"{parts[0]}/{parts[1]}"
        if len(parts) >= 3:
            return f"{parts[0]} {parts[1]}/{parts[2]}"
        return ""

    def _sqrt(self, template: Template) -> str:
        value = self._param(template, 0)
        return "√" + (value if len(value) <= 1 or value.isalnum() else f"({value})")

    def _circa(self, template: Template) -> str:
        value = self._param(template, 0)
        return f"c. {value}" if value else "c."

    def _as_of(self, template: Template) -> str:
        parts = self._params(template)[:3]
        return "As of " + "-".join(p for p in parts if p) if parts else ""

    def _date(self, template: Template) -> str:
        parts = [str(v).strip() for v in _positional(template)][:3]
        if not parts or not parts[0].isdigit():
            return parts[0] if parts else ""
        year, rest = parts[0], [p.zfill(2) for p in parts[1:] if p.isdigit()]
        return "-".join([year, *rest])


def _tidy(text: str) -> str:
    """Normalize spaces, remove leftovers of dropped markup, collapse blank lines."""
    text = _MAGIC_WORD.sub("", text)
    text = _INVISIBLE.sub("", _ODD_SPACE.sub(" ", text))
    lines: list[str] = []
    blank = False
    for raw in text.split("\n"):
        if _TABLE_LINE.match(raw):
            continue
        line = _SPACES.sub(" ", raw).strip()
        line = _EMPTY_BRACKETS.sub("", line)
        line = _OPEN_BRACKET_SPACE.sub("(", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        line = _SPACES.sub(" ", line).strip()
        if not line or _JUNK_LINE.match(line):
            blank = bool(lines)
            continue
        if blank:
            lines.append("")
            blank = False
        lines.append(line)
    return "\n".join(lines)


def _crude_strip(wikitext: str) -> str:
    """Last-resort regex strip, used only when the parser fails."""
    text = re.sub(r"<!--.*?(?:-->|$)", "", wikitext, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?(?:</ref>|$)", "", text, flags=re.S | re.I)
    previous = None
    while previous != text:  # innermost templates first
        previous = text
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\[\[(?:File|Image|Category|Media):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
                  "", text, flags=re.I)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\s([^\]]*)\]", r"\1", text)
    text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)
    return text.replace("'''", "").replace("''", "")


def clean_wikitext(wikitext: str) -> str:
    """Turn MediaWiki markup into plain prose; never raises.

    >>> clean_wikitext("{{Infobox planet|mass=5}}'''Mars''' is {{convert|227.9|e6km|abbr=on}} "
    ...                "from the [[Sun]].<ref>NASA</ref>\\n== See also ==\\n* [[Venus]]")
    'Mars is 227.9 million km from the Sun.'
    >>> clean_wikitext("{{val|6.02214076|e=23|u=mol<sup>−1</sup>}} and {{sfrac|1|2}}")
    '6.02214076×10^23 mol^−1 and 1/2'
    """
    if not wikitext:
        return ""
    if not isinstance(wikitext, str):
        wikitext = str(wikitext)
    try:
        return _tidy(_Renderer().render_document(mwparserfromhell.parse(wikitext)))
    except Exception as exc:  # the renderer must never take the pipeline down
        _fell_back("renderer", exc, "falling back to strip_code")
    try:
        return _tidy(mwparserfromhell.parse(wikitext).strip_code())
    except Exception as exc:
        _fell_back("strip_code", exc, "using a crude strip")
    try:
        return _tidy(_crude_strip(wikitext))
    except Exception as exc:  # pragma: no cover - regexes over a str do not fail
        _fell_back("crude", exc, "dropping the text")
        return ""


#: How often each cleaner failed and the next one was used (``renderer``: the renderer
#: failed, strip_code was used; ``strip_code``; ``crude``: the text was dropped). A bug in
#: the renderer shows here (and in the log) instead of silently degrading the corpus.
FALLBACKS: Counter = Counter()


def _fell_back(stage: str, exc: Exception, then: str) -> None:
    FALLBACKS[stage] += 1
    level = logging.WARNING if FALLBACKS[stage] == 1 else logging.DEBUG  # once, then quietly
    logger.log(level, "clean_wikitext: the %s failed (%s: %s); %s (%d time(s) so far)", stage,
               type(exc).__name__, exc, then, FALLBACKS[stage])
