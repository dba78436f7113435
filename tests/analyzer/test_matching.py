"""Brand and topic matching: word boundaries, case, phrases across whitespace, sigils, exclusions,
several brands per text, and the topic taxonomy with its terms per language."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ConfigError, EcouteConfig, TopicTerms, load_config
from services.analyzer.matching import BrandMatch, BrandMatcher, TermFinder, TopicClassifier


def brands_in(matcher: BrandMatcher, text: str) -> list[str]:
    return [m.brand for m in matcher.match(text)]


ACME = BrandMatcher({"acme": "acme"})


@pytest.mark.parametrize(
    "text",
    ["acme", "ACME!", "Acme's new phone", "I love acme.", "(acme)", "acme,globex", "«Acme»", "über acme", "x\nacme\n"],
)
def test_term_matches_on_word_boundaries(text: str) -> None:
    assert ACME.match(text) == [BrandMatch("acme", ["acme"])]


@pytest.mark.parametrize(
    "text", ["Acmeville", "acmecorp", "superacme", "acme2", "acme_corp", "xacmex", "", "nothing here", "acm e"]
)
def test_term_inside_a_longer_word_does_not_match(text: str) -> None:
    assert ACME.match(text) == []


def test_case_insensitive_and_matched_terms_are_normalised() -> None:
    matcher = BrandMatcher({"acme": '"Acme Corp" OR #Acme'})
    assert matcher.match("ACME CORP and #ACME") == [BrandMatch("acme", ["#acme", "acme corp"])]


@pytest.mark.parametrize("text", ["acme corp", "ACME   Corp", "acme\ncorp", "acme \t\n corp!", "Acme\r\nCorp's"])
def test_phrase_matches_across_whitespace_runs_and_newlines(text: str) -> None:
    matcher = BrandMatcher({"acme": '"acme corp"'})
    assert matcher.match(text) == [BrandMatch("acme", ["acme corp"])]


@pytest.mark.parametrize("text", ["acme-corp", "acmecorp", "acme, corp", "acme corporation", "the acme"])
def test_phrase_needs_its_words_in_order(text: str) -> None:
    assert BrandMatcher({"acme": '"acme corp"'}).match(text) == []


def test_hashtag_term_matches_only_the_hashtag() -> None:
    matcher = BrandMatcher({"acme": '"#acme"'})
    assert brands_in(matcher, "loving it #Acme") == ["acme"]
    assert brands_in(matcher, "loving acme") == []
    assert brands_in(matcher, "#acmeville") == []
    assert brands_in(matcher, "foo#acme") == []


def test_plain_term_does_not_match_hashtag_or_handle() -> None:
    # "acme" and "#acme" are distinct terms (the design's example query lists both).
    assert ACME.match("#acme") == []
    assert ACME.match("@acme") == []


def test_handle_term() -> None:
    matcher = BrandMatcher({"acme": "@acme"})
    assert matcher.match("thanks @ACME!") == [BrandMatch("acme", ["@acme"])]
    assert matcher.match("mail me at bob@acme") == []
    assert matcher.match("@acmesupport") == []


def test_design_query_with_exclusion() -> None:
    matcher = BrandMatcher({"acme": '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"'})
    assert matcher.match("#acme is great") == [BrandMatch("acme", ["#acme"])]
    assert matcher.match("@acme help") == [BrandMatch("acme", ["@acme"])]
    assert matcher.match("Acme corp layoffs announced today") == []
    assert matcher.match("acme stock falls after Acme Corp\nLayoffs") == []
    assert matcher.match("acme corp hires") == [BrandMatch("acme", ["acme"])]


def test_not_excludes_only_its_own_brand() -> None:
    matcher = BrandMatcher({"acme": "acme NOT recall", "globex": "globex"})
    assert brands_in(matcher, "acme and globex") == ["acme", "globex"]
    assert brands_in(matcher, "acme recall, globex fine") == ["globex"]


def test_several_brands_in_one_text_each_with_its_own_terms() -> None:
    matcher = BrandMatcher({"acme": ["acme", "@acme"], "globex": ["globex", "#globex"], "initech": "initech"})
    matches = matcher.match("@acme vs #Globex vs globex: who wins?")
    assert matches == [BrandMatch("acme", ["@acme"]), BrandMatch("globex", ["#globex", "globex"])]


def test_and_query_needs_every_term() -> None:
    matcher = BrandMatcher({"acme": "acme AND (phone OR tablet)"})
    assert brands_in(matcher, "acme phone") == ["acme"]
    assert brands_in(matcher, "acme laptop") == []
    assert brands_in(matcher, "phone") == []


def test_shared_terms_and_overlapping_brand_terms() -> None:
    # A brand's term must be found even where another brand's longer term covers it.
    matcher = BrandMatcher({"apple": "apple", "applemusic": '"apple music"'})
    assert brands_in(matcher, "apple pie") == ["apple"]
    assert brands_in(matcher, "I love Apple Music") == ["apple", "applemusic"]


def test_special_characters_in_terms_are_literal() -> None:
    matcher = BrandMatcher({"cpp": '"c++"', "att": "at&t", "dot": "acme.io"})
    assert brands_in(matcher, "I write C++ daily") == ["cpp"]
    assert brands_in(matcher, "AT&T outage") == ["att"]
    assert brands_in(matcher, "acmexio") == []
    assert brands_in(matcher, "visit acme.io now") == ["dot"]


def test_term_finder_empty_vocabulary() -> None:
    assert TermFinder([]).find("anything") == set()
    assert TermFinder(["  "]).find("anything") == set()
    assert TermFinder(["acme"]).find("") == set()


# --- topics ----------------------------------------------------------------------------------------

TAXONOMY = {
    "customer_service": ["support", "Customer Service", "service client"],
    "pricing": ["price", "expensive", "cheap", "prix"],
    "praise": ["love", "great"],
    "value": ["cheap", "price"],
}


def test_topics_of_a_text_sorted() -> None:
    classifier = TopicClassifier(TAXONOMY)
    assert classifier.classify("Their SUPPORT is great") == ["customer_service", "praise"]
    assert classifier.classify("nothing relevant") == []
    assert classifier.classify("") == []


def test_multi_word_topic_terms() -> None:
    classifier = TopicClassifier(TAXONOMY)
    assert classifier.classify("the customer\n  service desk") == ["customer_service"]
    assert classifier.classify("Le service client est nul") == ["customer_service"]
    assert classifier.classify("customer of the service") == []


def test_one_term_in_several_topics() -> None:
    classifier = TopicClassifier(TAXONOMY)
    assert classifier.classify("so cheap!") == ["pricing", "value"]
    assert classifier.classify("price tag") == ["pricing", "value"]


def test_topic_terms_on_word_boundaries() -> None:
    classifier = TopicClassifier(TAXONOMY)
    assert classifier.classify("priceless supportive glove") == []


def test_overlapping_topic_terms_both_count() -> None:
    classifier = TopicClassifier({"service": ["service"], "customer_service": ["customer service"]})
    assert classifier.classify("customer service was slow") == ["customer_service", "service"]


# --- topics per language ---------------------------------------------------------------------------

PER_LANGUAGE: dict[str, list[str] | dict[str, list[str]]] = {
    "pricing": {"en": ["price", "cheap"], "fr": ["prix", "trop cher"], "*": ["€"]},
    "delivery": {"en": ["delivery"], "fr": ["livraison"]},
    "support": ["support", "service client"],
}


def test_list_form_means_any_language() -> None:
    classifier = TopicClassifier({"support": ["support", "service client"]})
    for lang in ("en", "fr", "de", None):
        assert classifier.classify("Le service client? No support.", lang) == ["support"]


def test_terms_count_only_in_their_language() -> None:
    classifier = TopicClassifier(PER_LANGUAGE)
    assert classifier.classify("Beaucoup trop cher, ce téléphone", "fr") == ["pricing"]
    assert classifier.classify("Le prix de la livraison", "fr") == ["delivery", "pricing"]
    # An English text with the French word, or a French text with the English one, gets no topic.
    assert classifier.classify("the prix fixe menu", "en") == []
    assert classifier.classify("le price tag", "fr") == []
    assert classifier.classify("great price, fast delivery", "en") == ["delivery", "pricing"]


def test_any_language_terms_count_in_every_language_and_without_one() -> None:
    classifier = TopicClassifier(PER_LANGUAGE)
    for lang in ("en", "fr", "de", None):
        assert classifier.classify("29 € !", lang) == ["pricing"]
    # A language a topic has no entry for, or none at all, gets only the `*` terms and lists.
    assert classifier.classify("prix price livraison delivery support", "de") == ["support"]
    assert classifier.classify("prix price livraison delivery support", None) == ["support"]


def test_one_pass_finds_every_language_of_a_shared_term() -> None:
    # "service" is English in one topic and French in another: each language keeps its own topic.
    classifier = TopicClassifier({"help": {"en": ["service"]}, "service_public": {"fr": ["Service"]}})
    assert classifier.classify("SERVICE", "en") == ["help"]
    assert classifier.classify("service", "fr") == ["service_public"]
    assert classifier.classify("service", None) == []


def test_classifier_takes_the_config_taxonomy() -> None:
    config = EcouteConfig.model_validate({"topics": PER_LANGUAGE})
    assert config.topics["support"] == TopicTerms({"*": ["support", "service client"]})
    assert config.topics["pricing"].for_language("fr") == ("€", "prix", "trop cher")
    assert config.topics["pricing"].for_language(None) == ("€",)
    # As a sequence a topic is all its terms, so code that only wants the vocabulary still works.
    assert list(config.topics["pricing"]) == ["price", "cheap", "prix", "trop cher", "€"]
    assert config.model_dump()["topics"]["support"] == {"*": ["support", "service client"]}
    classifier = TopicClassifier(config.topics)
    assert classifier.classify("Trop chère? Non: trop cher !", "fr") == ["pricing"]
    assert classifier.classify("Trop chère? Oui.", "fr") == []


def write_config(tmp_path: Path, topics_yaml: str) -> Path:
    path = tmp_path / "ecoute.yaml"
    path.write_text(f"topics:\n{topics_yaml}", encoding="utf-8")
    return path


def test_both_yaml_forms_load(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            '  support: [support, "customer service"]\n'
            '  pricing: {en: [price, cheap], fr: [prix, "trop cher"], "*": ["€"]}\n',
        )
    )
    assert config.topics["support"].by_language == {"*": ("support", "customer service")}
    assert config.topics["pricing"].by_language == {"en": ("price", "cheap"), "fr": ("prix", "trop cher"), "*": ("€",)}


@pytest.mark.parametrize(
    ("topics_yaml", "problem"),
    [
        ("  pricing: {FR: [prix]}", "language 'FR': use an ISO 639-1 code"),
        ("  pricing: {fra: [prix]}", "language 'fra': use an ISO 639-1 code"),
        ("  pricing: {no: [pris]}", "language False: YAML reads an unquoted no"),
        ("  pricing: {fr: []}", "terms for 'fr': no terms"),
        ("  pricing: {fr: [prix, '  ']}", "terms for 'fr': an empty term"),
        ("  pricing: {fr: prix}", "terms for 'fr': give a list of terms"),
        ("  pricing: []", "no terms"),
        ("  pricing: [price, '']", "an empty term"),
        ("  pricing:", "give a list of terms"),
        ("  pricing: price", "give a list of terms"),
    ],
)
def test_bad_topic_config_names_the_topic(tmp_path: Path, topics_yaml: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"topics\.pricing: ") as caught:
        load_config(write_config(tmp_path, topics_yaml))
    assert problem in str(caught.value)


def test_classifier_refuses_a_bad_taxonomy_naming_the_topic() -> None:
    with pytest.raises(ValueError, match=r"topic 'pricing': language 'EN': use an ISO 639-1 code"):
        TopicClassifier({"pricing": {"EN": ["price"]}})
