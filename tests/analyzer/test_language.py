"""Language detection and tone per language: English equals vaderSentiment to 4 decimals on 1,000+
varied texts, French goes to vaderSentiment-fr, other languages are never given a score."""

from __future__ import annotations

import random
import time

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from schemas import EcouteConfig
from services.analyzer.pipeline import RawRecord, Stage1
from services.analyzer.tone import MAX_SCORED_CHARS, LanguageDetector, ToneScorer

SUBJECTS = ["the acme phone", "Acme support", "this update", "the new GLOBEX app", "my order", "their CEO"]
VERBS = ["is", "was", "isn't", "is not", "was never", "is kinda", "is extremely", "is sort of", "is SO", "was barely"]
ADJECTIVES = ["good", "great", "terrible", "awful", "fine", "amazing", "bad", "okay", "horrible", "excellent", "meh"]
TAILS = [
    "",
    "!",
    "!!!",
    " :)",
    " :(",
    " 😍",
    " 😡",
    " 🙄",
    " lol",
    " but the battery is bad",
    " but I still love it",
    ", not gonna lie",
    " — the bomb",
    " yeah right",
    " kind of",
    " at all.",
    " #fail",
    " #love",
    " haha",
    " smh",
]
IDIOMS = ["cut the mustard", "the bomb", "yeah right", "kiss of death", "hand to mouth", "the shit", "bad ass"]


def varied_texts(n: int, seed: int = 4) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}{rng.choice(TAILS)}"
        if i % 7 == 0:
            text = text.upper()
        if i % 11 == 0:
            text = f"{text}. it really does {rng.choice(IDIOMS)}"
        if i % 50 == 0:  # long posts, some beyond the scoring cap
            text = " ".join([text] * rng.randint(20, 200))
        texts.append(text)
    return texts


def test_english_tone_equals_vader_to_four_decimals_on_1000_texts() -> None:
    reference = SentimentIntensityAnalyzer()
    scorer = ToneScorer()
    texts = varied_texts(1200)
    assert sum(len(t) > MAX_SCORED_CHARS for t in texts) >= 5
    for text in texts:
        tone = scorer.score(text, "en")
        expected = reference.polarity_scores(text[:MAX_SCORED_CHARS])
        got = {"compound": tone.compound, "pos": tone.pos, "neu": tone.neu, "neg": tone.neg}
        assert {k: round(v, 4) for k, v in got.items()} == {k: round(expected[k], 4) for k in got}, text
    labels = {scorer.score(t, "en").label for t in texts}
    assert labels == {"positive", "neutral", "negative"}


def test_a_long_post_is_scored_on_its_prefix_quickly() -> None:
    scorer = ToneScorer()
    text = "acme is great but the battery is awful. " * 5000
    started = time.perf_counter()
    tone = scorer.score(text, "en")
    assert time.perf_counter() - started < 1.0
    assert tone == scorer.score(text[:MAX_SCORED_CHARS], "en")


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("I absolutely love the new acme phone, the camera is amazing", "en"),
        ("J'adore le nouveau téléphone acme, l'appareil photo est génial", "fr"),
        ("Ich liebe das neue Acme Telefon, die Kamera ist großartig", "de"),
        ("Me encanta el nuevo teléfono de acme, la cámara es increíble", "es"),
        ("lol 😍", "en"),  # too short to tell: English, whose lexicon knows emoji
    ],
)
def test_language_detection(text: str, lang: str) -> None:
    assert LanguageDetector().detect(text) == lang


def test_french_is_scored_in_french_and_other_languages_are_unscored() -> None:
    scorer = ToneScorer()
    assert scorer.score("Le service client d'acme est nul, vraiment décevant", "fr").label == "negative"
    assert scorer.score("J'adore acme, c'est génial et super", "fr").label == "positive"
    german = scorer.score("Ich liebe acme, es ist wunderbar", "de")
    assert german.label == "unscored" and german.compound == 0.0


def test_stage1_detects_language_and_honours_the_source_lang_and_lang_filters() -> None:
    config = EcouteConfig.model_validate({"brands": {"acme": {"query": "acme"}, "acmefr": {"query": "acme* lang:fr"}}})
    stage1 = Stage1(config)
    import orjson

    records = [
        RawRecord(0, 0, b"a", orjson.dumps({"id": "m1", "text": "Ich liebe acme, es ist wunderbar und toll"})),
        RawRecord(0, 1, b"b", orjson.dumps({"id": "m2", "text": "J'adore acmephone, c'est génial et super"})),
        RawRecord(0, 2, b"c", orjson.dumps({"id": "m3", "text": "acme rocks", "lang": "fr"})),
    ]
    result = stage1.process(records, lambda _: False)
    scored = [orjson.loads(value) for _, value in result.scored]
    by_id = {(s["id"], s["brand"]): s for s in scored}
    assert by_id[("m1", "acme")]["lang"] == "de"
    assert by_id[("m1", "acme")]["sentiment"]["label"] == "unscored"
    assert ("m1", "acmefr") not in by_id
    assert by_id[("m2", "acmefr")]["lang"] == "fr" and ("m2", "acme") not in by_id  # acmephone is not acme
    assert by_id[("m3", "acme")]["lang"] == "fr" and ("m3", "acmefr") in by_id  # the source's lang wins
    day = [p for p in result.partials if p["brand"] == "acme"]
    assert sum(p["unscored"] for p in day) == 1
