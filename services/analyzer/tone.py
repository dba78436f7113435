"""Language and tone of a text.

Language: the source's own `lang` when it gives one, else py3langid (its model ships in the wheel).
Tone: English with vaderSentiment, French with vaderSentiment-fr; any other language gets the
label `unscored` — never an English score of a German post. Labels: positive ≥ 0.05,
negative ≤ −0.05, else neutral.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from py3langid.langid import MODEL_FILE, LanguageIdentifier
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# VADER's cost grows faster than the text (≈35 ms at 1,000 tokens): longer texts are cut here so
# one essay can't stall a worker. 2,000 characters is ~350 words, longer than nearly every post.
MAX_SCORED_CHARS = 2000
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05
SCORED_LANGUAGES = ("en", "fr")
# Below this probability the detector's first guess is not trusted (short posts, names, emoji).
MIN_LANGUAGE_CONFIDENCE = 0.5
# Language detection reads at most this much: the first sentences say it as well as the whole post.
MAX_DETECTED_CHARS = 500


@dataclass(frozen=True, slots=True)
class Tone:
    compound: float
    pos: float
    neu: float
    neg: float
    label: str


UNSCORED = Tone(0.0, 0.0, 0.0, 0.0, "unscored")


def label_for(compound: float) -> str:
    if compound >= POSITIVE_THRESHOLD:
        return "positive"
    if compound <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


class LanguageDetector:
    """ISO 639-1 code of a text, or the best scored language when the text says too little."""

    def __init__(self) -> None:
        self._any = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._scored = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._scored.set_languages(list(SCORED_LANGUAGES))

    def detect(self, text: str) -> str:
        sample = text[:MAX_DETECTED_CHARS]
        lang, probability = self._any.classify(sample)
        if probability >= MIN_LANGUAGE_CONFIDENCE:
            return str(lang)
        # Too short to tell among 97 languages: choose between the scored ones, and English (whose
        # lexicon knows emoji and slang) when even that is a coin toss.
        lang, probability = self._scored.classify(sample)
        return str(lang) if probability >= 0.8 else "en"


class ToneScorer:
    def __init__(self, max_chars: int = MAX_SCORED_CHARS) -> None:
        self._analyzers: dict[str, Any] = {"en": SentimentIntensityAnalyzer()}
        self.max_chars = max_chars

    def _analyzer(self, lang: str) -> Any:
        analyzer = self._analyzers.get(lang)
        if analyzer is None and lang == "fr":
            with warnings.catch_warnings():  # it suggests python-Levenshtein, which is installed
                warnings.simplefilter("ignore")
                from vaderSentiment_fr.vaderSentiment import SentimentIntensityAnalyzer as FrenchAnalyzer

                analyzer = self._analyzers["fr"] = FrenchAnalyzer()
        return analyzer

    def score(self, text: str, lang: str = "en") -> Tone:
        analyzer = self._analyzer(lang) if lang in SCORED_LANGUAGES else None
        if analyzer is None:
            return UNSCORED
        scores = analyzer.polarity_scores(text[: self.max_chars])
        compound = float(scores["compound"])
        return Tone(compound, float(scores["pos"]), float(scores["neu"]), float(scores["neg"]), label_for(compound))
