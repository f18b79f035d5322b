"""Tests for pipeline.corpus.wikitext.clean_wikitext."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.corpus import wikitext
from pipeline.corpus.wikitext import clean_wikitext


ARTICLE = """{{Short description|Chemical element}}
{{Infobox element
|name = Hydrogen
|atomic_mass = 1.008 SECRETINFOBOX
}}
'''Hydrogen''' is a [[chemical element]] with [[Symbol (chemistry)|symbol]] ''H''.<ref name="a">{{cite book|title=SECRETCITE}}</ref>
Its density is {{convert|0.08988|g/L|oz/cuft}} and the Sun is 1,234.5&nbsp;km wide.<ref>SECRETREF</ref>
The [[Avogadro constant]] is 6.02×10^23 per mole; <math>E = mc^2</math>.
[[File:Hydrogen discharge tube.jpg|thumb|SECRETCAPTION [[tube]]]]

== History ==
Found by [[Henry Cavendish]] in 1766.<!-- SECRETCOMMENT -->

{| class="wikitable"
! Isotope !! SECRETTABLE
|-
| Protium || 1.007825
|}

== See also ==
* [[SECRETSEEALSO]]

== References ==
{{reflist}}

== External links ==
* [http://example.org SECRETEXTERNAL]
{{Navbox|SECRETNAVBOX}}
[[Category:SECRETCATEGORY]]
"""


@pytest.fixture(scope="module")
def article() -> str:
    return clean_wikitext(ARTICLE)


def test_article_keeps_prose_numbers_and_formulas(article: str) -> None:
    assert article.startswith("Hydrogen is a chemical element with symbol H.")
    assert "0.08988 g/L" in article
    assert "1,234.5 km" in article
    assert "6.02×10^23" in article
    assert "E = mc^2" in article
    assert "Found by Henry Cavendish in 1766." in article


def test_article_drops_markup_and_non_prose(article: str) -> None:
    assert "SECRET" not in article, article
    for junk in ("{{", "}}", "[[", "]]", "<ref", "</", "'''", "''", "{|", "|}", "==",
                 "Category", "thumb"):
        assert junk not in article, (junk, article)
    assert "See also" not in article and "References" not in article
    assert "External links" not in article


def test_headings_become_plain_lines(article: str) -> None:
    assert "\nHistory\n" in article
    assert "\n\n\n" not in article
    assert article == article.strip()


@pytest.mark.parametrize(("markup", "expected"), [
    ("{{convert|10|km|mi}}", "10 km"),
    ("{{convert|10|km|mi|abbr=on}}", "10 km"),
    ("{{cvt|1,234.5|km}}", "1,234.5 km"),
    ("{{convert|10|to|20|km/h|mph}}", "10 to 20 km/h"),
    ("{{convert|10|-|20|m}}", "10–20 m"),
    ("{{convert|5|ft|6|in|m}}", "5 ft 6 in"),
    ("{{convert|100|C|F}}", "100 °C"),
    ("{{convert|510|km2|sqmi}}", "510 km²"),
    ("{{convert|227.9|e6km|e6mi}}", "227.9 million km"),
    ("{{val|1.23|e=5|u=m}}", "1.23×10^5 m"),
    ("{{val|9.81|0.02|u=m/s2}}", "9.81±0.02 m/s2"),
    ("{{val|1.5|+0.2|-0.1}}", "1.5+0.2−0.1"),
    ("{{val|6.674|(15)|e=-11}}", "6.674(15)×10^-11"),
    ("{{val|3|ul=m|upl=s}}", "3 m/s"),
    ("{{math|''E'' {{=}} ''mc''<sup>2</sup>}}", "E = mc^2"),
    ("{{math|1=a+b=c}}", "a+b=c"),
    ("{{mvar|x}}", "x"),
    ("{{sfrac|1|2}}", "1/2"),
    ("{{sfrac|3|1|4}}", "3 1/4"),
    ("{{frac|2}}", "1/2"),
    ("{{nowrap|10 kg}}", "10 kg"),
    ("{{sqrt|2}}", "√2"),
    ("10{{e|-3}}", "10×10^-3"),
    ("{{10^|23}}", "10^23"),
    ("{{formatnum:1234567}}", "1234567"),
    ("<chem>2H2 + O2 -> 2H2O</chem>", "2H2 + O2 -> 2H2O"),
    ("<ce>SO4^2-</ce>", "SO4^2-"),
    ("{{chem|H|2|O}}", "H2O"),
    ("H<sub>2</sub>O", "H2O"),
    ("10<sup>−3</sup>", "10^−3"),
    ("the 21<sup>st</sup> century", "the 21st century"),
    ("&minus;40&nbsp;°C", "−40 °C"),
    ("{{circa|1766}}", "c. 1766"),
    ("{{lang|fr|Le Monde}}", "Le Monde"),
    ("{{abbr|SI|International System of Units}} units", "SI units"),
])
def test_value_templates_render_as_text(markup: str, expected: str) -> None:
    assert clean_wikitext(markup) == expected


@pytest.mark.parametrize(("markup", "expected"), [
    ("[[Foo|bar]]", "bar"),
    ("[[Apple]]s", "Apples"),
    ("[[Mercury (planet)|]]", "Mercury"),
    ("[http://example.org the site]", "the site"),
    ("see [http://example.org/2].", "see."),
    ("'''bold''' and ''italic'' and '''''both'''''", "bold and italic and both"),
    ("<span style='color:red'>red</span> <small>tiny</small>", "red tiny"),
    ("<nowiki>[[not a link]]</nowiki>", "[[not a link]]"),
    ("a<!-- hidden -->b", "ab"),
    ("Paris ({{IPA|fr|paʁi}}) is", "Paris is"),
    ("text{{citation needed|date=May 2020}}.", "text."),
    ("x<ref name=a/> y", "x y"),
    ("[[de:Paris]][[Category:Cities]][[Image:x.png|thumb|cap]]", ""),
    ("{{#if: x | y | z}}kept", "kept"),
    ("__NOTOC__\nBody", "Body"),
])
def test_links_and_markup(markup: str, expected: str) -> None:
    assert clean_wikitext(markup) == expected


def test_non_prose_section_dropped_but_following_prose_section_kept() -> None:
    text = "Intro.\n== Notes ==\n{{notelist}}\nnote text\n=== Sub ===\nsub note\n== Physics ==\nProse."
    assert clean_wikitext(text) == "Intro.\n\nPhysics\nProse."


def test_prose_heading_starting_with_notes_is_kept() -> None:
    assert "Notes on isotopes" in clean_wikitext("A.\n== Notes on isotopes ==\nB.")


def test_blank_lines_collapsed() -> None:
    assert clean_wikitext("a\n\n\n\n{{x}}\n\n\n   b   c  ") == "a\n\nb c"


@pytest.mark.parametrize("markup", [
    "", "{{", "}}", "[[", "{{convert|}}", "{{val}}", "{{sfrac}}", "<math>", "{|\n|a",
    "<ref>unclosed", "{{" * 500 + "x", "[[File:" * 100, "'''" * 99, "<!--", "{{{1|}}}",
    "== ==", "&#xZZ;", "{{convert|to|to|to}}", "{{val|1|2|3|4|e=}}",
])
def test_odd_markup_never_raises(markup: str) -> None:
    before = dict(wikitext.FALLBACKS)
    assert isinstance(clean_wikitext(markup), str)
    assert dict(wikitext.FALLBACKS) == before, "the renderer failed and a fallback was used"


def test_non_string_input_is_tolerated() -> None:
    assert clean_wikitext(None) == ""  # type: ignore[arg-type]


_MARKUP_PIECES = st.sampled_from([
    "{{", "}}", "[[", "]]", "|", "<ref>", "</ref>", "<math>", "</math>", "{|", "|}", "==", "'''",
    "''", "<!--", "-->", "word ", "\n", "<sup>", "</sup>", "{{convert|", "{{val|", "=", "[http://x ",
    "]", "&nbsp;", "<", ">", "{{{", "}}}", "<table>", "#", "*", ":", "12.5", "km",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_MARKUP_PIECES, max_size=60).map("".join))
def test_random_markup_never_raises(markup: str) -> None:
    before = dict(wikitext.FALLBACKS)
    out = clean_wikitext(markup)
    assert dict(wikitext.FALLBACKS) == before, "the renderer failed and a fallback was used"
    assert isinstance(out, str)
    assert "\n\n\n" not in out
    assert out == out.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    before = dict(wikitext.FALLBACKS)
    assert isinstance(clean_wikitext(text), str)
    assert dict(wikitext.FALLBACKS) == before, "the renderer failed and a fallback was used"


def test_a_renderer_crash_is_counted_and_logged_once(monkeypatch, caplog) -> None:
    """The fallback the tests above check is not taken is visible when it is."""
    def crash(self, code):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(wikitext, "FALLBACKS", type(wikitext.FALLBACKS)())
    monkeypatch.setattr(wikitext._Renderer, "render_document", crash)
    with caplog.at_level("DEBUG", logger="pipeline.corpus.wikitext"):
        assert clean_wikitext("[[Mars]] is a [[planet]].") == "Mars is a planet."
        assert clean_wikitext("[[Venus]]") == "Venus"
    assert wikitext.FALLBACKS == {"renderer": 2}
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "renderer bug" in warnings[0].getMessage()


def test_plain_prose_is_unchanged() -> None:
    prose = ("The speed of light is 299,792,458 m/s (exactly).\n\nIt is denoted c; "
             "see f() and a[i] : b, 5 ! = 120.")
    assert clean_wikitext(prose) == prose
