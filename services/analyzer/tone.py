"""Tone of a text with VADER: compound/pos/neu/neg and a label (positive ≥ 0.05, negative ≤ −0.05)."""

from __future__ import annotations

from dataclasses import dataclass

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# VADER's cost grows faster than the text (≈35 ms at 1,000 tokens): longer texts are cut here so
# one essay can't stall a worker. 2,000 characters is ~350 words, longer than nearly every post.
MAX_SCORED_CHARS = 2000
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05


@dataclass(frozen=True, slots=True)
class Tone:
    compound: float
    pos: float
    neu: float
    neg: float
    label: str


def label_for(compound: float) -> str:
    if compound >= POSITIVE_THRESHOLD:
        return "positive"
    if compound <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


class ToneScorer:
    def __init__(self, max_chars: int = MAX_SCORED_CHARS) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self.max_chars = max_chars

    def score(self, text: str) -> Tone:
        scores = self._analyzer.polarity_scores(text[: self.max_chars])
        compound = float(scores["compound"])
        return Tone(compound, float(scores["pos"]), float(scores["neu"]), float(scores["neg"]), label_for(compound))
