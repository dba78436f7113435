"""The listening configuration (YAML, `ECOUTE_CONFIG`): brands, topics, sources, alerts.

Every service reads the same file; this module is the one place that knows its shape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """The YAML configuration can't be used; the message names the file and the setting."""


def parse_duration(value: Any) -> float:
    """'5m' → 300.0; numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 24h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrandConfig(_Section):
    query: str | list[str]
    competitors: list[str] = Field(default_factory=list)

    @field_validator("query")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            raise ValueError("a brand needs a query")
        return value


class VolumeSpikeRule(_Section):
    window: Seconds = 300.0
    baseline: Seconds = 86400.0
    sigma: float = Field(3.0, gt=0)
    min_mentions: int = Field(20, ge=1)
    warmup: Seconds = 1800.0
    cooldown: Seconds = 1800.0


class KeywordRule(_Section):
    terms: list[str] = Field(default_factory=list)


class InfluencerRule(_Section):
    min_followers: int = Field(10_000, ge=1)


class AlertsConfig(_Section):
    model_config = ConfigDict(extra="allow", frozen=True)
    volume_spike: VolumeSpikeRule = Field(default_factory=lambda: VolumeSpikeRule())
    keywords: KeywordRule = Field(default_factory=KeywordRule)
    influencer: InfluencerRule = Field(default_factory=lambda: InfluencerRule())


class FetchConfig(_Section):
    allow_networks: list[str] = Field(default_factory=list)


class ApiKey(_Section):
    key: str
    role: Literal["admin", "read"] = "read"
    brands: list[str] = Field(default_factory=lambda: ["*"])


class SourceConfig(BaseModel):
    """One entry of `sources:`; each connector validates its own options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["rss", "reddit", "mastodon", "bluesky", "hackernews", "simulate"]


class EcouteConfig(_Section):
    model_config = ConfigDict(extra="allow", frozen=True)
    brands: dict[str, BrandConfig] = Field(default_factory=dict)
    topics: dict[str, list[str]] = Field(default_factory=dict)
    sources: list[SourceConfig] = Field(default_factory=list)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    api_keys: list[ApiKey] = Field(default_factory=list)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    webhooks: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("brands")
    @classmethod
    def _brand_names(cls, value: dict[str, BrandConfig]) -> dict[str, BrandConfig]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
                raise ValueError(f"brand name {name!r}: use lowercase letters, digits, '_', '.', '-'")
        return value


def load_config(path: str | Path) -> EcouteConfig:
    """Read and validate the YAML file; a ConfigError says which setting is wrong and where."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file (set ECOUTE_CONFIG or create ecoute.yaml)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (brands:, topics:, sources: …)")
    try:
        return EcouteConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
