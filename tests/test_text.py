"""Pure text helpers: normalisation, tokenisation, segmentation, attribution, scoring."""

from hypothesis import given, settings as hsettings, strategies as st

from provenance.match import MatchPolicy, score
from provenance.text.attribution import citations
from provenance.text.normalize import content_words, normalize, tokens
from provenance.text.segment import segment

TEXTS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400
) | st.lists(st.sampled_from(["word", "Word.", "\n", "\n\n", " ", "?", "“Quoted”", "—", "\u00ad", "Ünïcode", "城市", "Минск."]), max_size=80).map("".join)


@given(TEXTS)
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@given(TEXTS)
@hsettings(max_examples=300)
def test_segment_offsets_point_into_the_text(text):
    previous_end = 0
    for passage in segment(text, min_words=3, max_words=12):
        assert 0 <= passage.start < passage.end <= len(text)
        assert text[passage.start : passage.end] == passage.text
        assert passage.start >= previous_end, "passages overlap"
        assert passage.text == passage.text.strip()
        previous_end = passage.end


def test_normalize_equates_typographic_variants():
    assert normalize("“Quoted” — it’s\u00ad here\u200b") == normalize('"quoted" - it\'s here')
    assert normalize("ＦＵＬＬ width") == "full width"


def test_tokens_handle_scripts_and_cjk_bigrams():
    assert tokens(normalize("Лукашенко одобрил проект")) == ["лукашенко", "одобрил", "проект"]
    assert tokens("北京天气") == ["北京", "京天", "天气"]
    assert tokens("it's the 2025 plan") == ["its", "the", "2025", "plan"]


def test_content_words_drop_function_words():
    assert "the" not in content_words(tokens("the amendment of the agreement"))


def test_segment_rejoins_hard_wrapped_prose_and_keeps_chrome_lines_apart():
    text = (
        "Previous Article\nNext Article\nThe committee approved the plan on\nthe first day of a long debate.\n"
        "A line of wrapped prose that is long enough to be cut by a fixed width\nFormatter goes on here.\n"
    )
    passages = [p.text for p in segment(text, min_words=3)]
    assert "Previous Article" in passages and "Next Article" in passages
    assert "The committee approved the plan on\nthe first day of a long debate." in passages
    assert "A line of wrapped prose that is long enough to be cut by a fixed width\nFormatter goes on here." in passages


def test_citations_find_crediting_phrases_only():
    found = citations("This move, reported by BelTA, was noted. According to Reuters, it holds. MOSCOW (AP) - x. TASS is an agency.")
    assert [c.agency for c in found] == ["BelTA", "Reuters", "AP"]
    assert all(c.text in ("reported by BelTA", "According to Reuters", "(AP)") for c in found)


def test_score_grades_verbatim_syndicated_rewritten_and_unrelated():
    source = tokens(normalize("Belarusian President Alexander Lukashenko has taken a significant step in deepening military ties with Russia by approving a draft amendment to the 2009 agreement on military technical cooperation."))
    light = tokens(normalize("Belarusian President Alexander Lukashenko has taken a major step in deepening military ties with Russia by approving a proposed amendment to the 2009 agreement on military technical cooperation."))
    reworded = tokens(normalize("Alexander Lukashenko, the president of Belarus, has made an important move to deepen military relations with Russia by endorsing a proposed change to the military technical cooperation agreement of 2009."))
    other = tokens(normalize("Farmers in the Gomel region reported a record potato harvest this autumn thanks to favourable weather."))
    assert score(source, source).label == "verbatim"
    assert score(source[5:20], source).label == "verbatim"  # an excerpt
    assert score(light, source).label == "syndicated"
    result = score(reworded, source)
    assert result.label == "rewritten" and result.jaccard < 0.2
    assert score(other, source, MatchPolicy()).label is None


@given(st.lists(st.sampled_from("a b c d e f g h".split()), max_size=30), st.lists(st.sampled_from("a b c d e f g h".split()), max_size=30))
def test_score_measures_are_bounded_and_symmetric(a, b):
    ab, ba = score(a, b), score(b, a)
    for value in (ab.jaccard, ab.containment_a, ab.containment_b, ab.content_overlap, ab.similarity):
        assert 0.0 <= value <= 1.0
    assert ab.jaccard == ba.jaccard
    assert ab.containment_a == ba.containment_b
