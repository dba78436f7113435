"""Tone scoring: VADER's own numbers, labels at the ±0.05 thresholds, and the long-text cap."""

from __future__ import annotations

import time

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.analyzer.tone import MAX_SCORED_CHARS, NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD, Tone, ToneScorer, label_for


@pytest.fixture(scope="module")
def scorer() -> ToneScorer:
    return ToneScorer()


@pytest.fixture(scope="module")
def vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


@pytest.mark.parametrize(
    ("compound", "label"),
    [
        (1.0, "positive"),
        (0.5, "positive"),
        (0.05, "positive"),
        (0.0500001, "positive"),
        (0.0499999, "neutral"),
        (0.0, "neutral"),
        (-0.0499999, "neutral"),
        (-0.05, "negative"),
        (-0.0500001, "negative"),
        (-1.0, "negative"),
    ],
)
def test_label_at_thresholds(compound: float, label: str) -> None:
    assert label_for(compound) == label


def test_thresholds_are_vaders_conventional_ones() -> None:
    assert (POSITIVE_THRESHOLD, NEGATIVE_THRESHOLD) == (0.05, -0.05)


TEXTS = [
    "I love my new Acme phone, the camera is amazing!",
    "Acme support was useless, never buying again.",
    "Just saw an ad for Acme.",
    "Acme prices are way too expensive this year :(",
    "Acme is NOT good. At all.",
    "Acme is not bad at all",
    "Acme isn't great",
    "The phone is great but the battery is terrible",
    "The battery is terrible but the phone is great",
    "ACME IS THE BEST!!!",
    "Acme is the best",
    "Acme is the BEST!!! 😍😍",
    "worst service ever 😡",
    "meh 😐",
    "😂😂😂",
    "Acme is kind of good",
    "Acme is extremely good",
    "Acme is barely acceptable",
    "That new feature is the bomb",
    "Their launch was a piece of cake, no problem",
    "Acme's app? Yeah right.",
    "I can't say I don't like it",
    "Never again. Never.",
    "lol acme u rock :) <3",
    "The support team was helpful, friendly and fast.",
    "Not sure what to think about the Acme merger...",
    "Acme recall: the battery can catch fire, a dangerous defect",
    "",
    "   ",
    "🙂",
    "Le service client est nul",
    "Without a doubt, a good product",
]


def test_scores_equal_vader(scorer: ToneScorer, vader: SentimentIntensityAnalyzer) -> None:
    labels = set()
    for text in TEXTS:
        tone = scorer.score(text)
        expected = vader.polarity_scores(text)
        got = {"compound": tone.compound, "pos": tone.pos, "neu": tone.neu, "neg": tone.neg}
        assert got == pytest.approx({k: expected[k] for k in got}, abs=5e-5), text
        assert tone.label == label_for(expected["compound"]), text
        assert all(isinstance(v, float) for v in got.values())
        labels.add(tone.label)
    # The list is varied enough to exercise every label.
    assert labels == {"positive", "neutral", "negative"}


def test_known_tones(scorer: ToneScorer) -> None:
    assert scorer.score("I love my new Acme phone, the camera is amazing!").label == "positive"
    assert scorer.score("Acme support was terrible, I hate it.").label == "negative"
    assert scorer.score("Just saw an ad for Acme.") == Tone(0.0, 0.0, 1.0, 0.0, "neutral")
    # Negation flips, capitals and exclamation marks intensify.
    assert scorer.score("Acme is not good").compound < 0 < scorer.score("Acme is good").compound
    assert scorer.score("ACME IS GOOD!!!").compound > scorer.score("Acme is good").compound


def test_long_text_is_scored_on_its_prefix_and_fast(scorer: ToneScorer, vader: SentimentIntensityAnalyzer) -> None:
    head = "Acme is wonderful and I love it. " * 70  # ~2,300 chars, all positive
    tail = "Acme is a horrible, awful, terrible disaster. " * 4000  # ~180,000 chars, all negative
    text = head + tail
    assert len(text) > 50 * MAX_SCORED_CHARS
    started = time.perf_counter()
    tone = scorer.score(text)
    elapsed = time.perf_counter() - started
    expected = vader.polarity_scores(text[:MAX_SCORED_CHARS])
    assert (tone.compound, tone.pos, tone.neu, tone.neg) == (
        expected["compound"],
        expected["pos"],
        expected["neu"],
        expected["neg"],
    )
    assert tone.label == "positive"
    # VADER on the whole text would take seconds to minutes; the prefix takes milliseconds.
    assert elapsed < 1.0


def test_text_at_the_cap_is_scored_whole() -> None:
    scorer = ToneScorer(max_chars=20)
    assert scorer.max_chars == 20
    assert scorer.score("good " * 4).compound == ToneScorer().score("good " * 4).compound
    # Beyond the cap the rest is ignored: the negative word after 20 characters doesn't count.
    assert scorer.score("good good good good terrible") == scorer.score("good good good good ")


def test_default_cap() -> None:
    assert ToneScorer().max_chars == MAX_SCORED_CHARS == 2000
