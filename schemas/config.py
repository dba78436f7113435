"""The listening configuration (YAML, `ECOUTE_CONFIG`): brands, topics, sources, alerts, webhooks, digest.

Every service reads the same file; this module is the one place that knows its shape.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import httpx
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    HttpUrl,
    SecretStr,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DOMAIN = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")
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


class OwnedMastodon(_Section):
    """A brand's own Mastodon account, read publicly: `{instance: https://mastodon.social, account: acme}`."""

    instance: HttpUrl
    account: str = Field(pattern=r"^@?[A-Za-z0-9_]{1,30}(@[A-Za-z0-9.-]{1,253})?$", description="acme or acme@host")


class OwnedBluesky(_Section):
    """A brand's own Bluesky account by `handle` or `did`, read from a public AppView."""

    handle: str | None = Field(None, pattern=r"^@?[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
    did: str | None = Field(None, pattern=r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,2048}$")
    base_url: HttpUrl = Field(HttpUrl("https://public.api.bsky.app"), description="the AppView answering app.bsky.*")

    @model_validator(mode="after")
    def _one_identity(self) -> OwnedBluesky:
        if (self.handle is None) == (self.did is None):
            raise ValueError("give either handle or did")
        return self

    @property
    def actor(self) -> str:
        return self.did or (self.handle or "").removeprefix("@")


class OwnedChannels(_Section):
    """`brands.<name>.owned:` the brand's own accounts and blog feeds, polled for their posts' reactions."""

    mastodon: list[OwnedMastodon] = Field(default_factory=list)
    bluesky: list[OwnedBluesky] = Field(default_factory=list)
    rss: list[HttpUrl] = Field(default_factory=list, description="the blog's RSS or Atom feed URLs")
    interval: Seconds = Field(900.0, description="between two polls of every channel")
    posts: int = Field(40, ge=1, le=100, description="the latest posts of each channel read at each poll")

    @model_validator(mode="after")
    def _some_channel(self) -> OwnedChannels:
        if not (self.mastodon or self.bluesky or self.rss):
            raise ValueError("owned needs at least one channel: mastodon, bluesky or rss")
        for name, channels in (("mastodon", self.mastodon), ("bluesky", self.bluesky), ("rss", self.rss)):
            if len(set(map(str, channels))) != len(channels):
                raise ValueError(f"the same {name} channel is listed twice")
        return self


class MastodonAccount(_Section):
    """The brand's Mastodon account to reply and follow with: its instance and an access token
    (scopes `write:statuses write:follows read:search read:accounts`)."""

    instance: StrictStr
    token: SecretStr

    @field_validator("instance")
    @classmethod
    def _instance_url(cls, value: str) -> str:
        return _plain_http_url(value)


class BlueskyAccount(_Section):
    """The brand's Bluesky account: its handle (or DID), an app password, and its PDS (`service`)."""

    handle: StrictStr = Field(min_length=3, max_length=2048)
    app_password: SecretStr
    service: StrictStr = "https://bsky.social"

    @field_validator("service")
    @classmethod
    def _service_url(cls, value: str) -> str:
        return _plain_http_url(value)


class BrandAccounts(_Section):
    """`brands.<name>.accounts:` the accounts the inbox replies and follows with (secrets: keep the file private)."""

    mastodon: MastodonAccount | None = None
    bluesky: BlueskyAccount | None = None


def _plain_http_url(value: str) -> str:
    try:
        parsed = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("give an http(s) URL with a host, e.g. https://mastodon.social")
    if parsed.userinfo:
        raise ValueError("credentials in the URL are refused (use token / app_password)")
    return value.rstrip("/")


class BrandConfig(_Section):
    query: str | list[str]
    competitors: list[str] = Field(default_factory=list)
    alerts: AlertsConfig | None = None  # overrides of the global `alerts:` for this brand
    accounts: BrandAccounts | None = None  # credentials to reply and follow from the inbox (never logged)
    owned: OwnedChannels | None = None  # the brand's own channels, tracked as content items
    # Sites the brand owns: links to them (or their subdomains) in mentions count as inbound links.
    owned_domains: list[StrictStr] = Field(default_factory=list)

    @field_validator("owned_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        domains = []
        for entry in value:
            domain = entry.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/").rstrip(".")
            domain = domain.removeprefix("www.")
            if not _DOMAIN.fullmatch(domain):
                raise ValueError(f"{entry!r} is not a domain name (e.g. acme.com or blog.acme.com)")
            domains.append(domain)
        return list(dict.fromkeys(domains))

    @field_validator("query")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            raise ValueError("a brand needs a query")
        return value


NonNegativeSeconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _WindowRule(_Section):
    """A rule comparing the brand's last `window` with the `baseline` period before it (event time).

    It waits for `warmup` of the brand's history, fires at most once per `cooldown`, and ignores
    windows that ended more than `max_age` before now (a backfill fills KPIs, it doesn't page anyone).
    """

    enabled: bool = True
    window: Seconds = 300.0
    baseline: Seconds = 86400.0
    warmup: Seconds = 1800.0
    cooldown: Seconds = 1800.0
    max_age: Seconds = 86400.0


class VolumeSpikeRule(_WindowRule):
    """Mentions of the window above mean + sigma·std of the baseline's window-sized blocks."""

    sigma: float = Field(3.0, gt=0)
    min_mentions: int = Field(20, ge=1)


class VolumeDropRule(_WindowRule):
    """Mentions of the window below mean − sigma·std of the baseline blocks and below (1 − min_drop)·mean."""

    window: Seconds = 900.0
    warmup: Seconds = 7200.0
    cooldown: Seconds = 3600.0
    sigma: float = Field(3.0, gt=0)
    min_baseline: float = Field(20.0, gt=0, description="a baseline mean (per window) below this never alerts")
    min_drop: float = Field(0.5, gt=0, le=1, description="the window must be at least this share below the mean")


class NegativeSurgeRule(_WindowRule):
    """Share of negative mentions in the window at least `threshold` and `margin` above the baseline's."""

    window: Seconds = 600.0
    threshold: float = Field(0.5, gt=0, le=1)
    min_negative: int = Field(10, ge=1)
    margin: float = Field(0.1, ge=0, lt=1)


class SentimentDropRule(_WindowRule):
    """Average compound of the window at least `delta` below the baseline's average."""

    window: Seconds = 900.0
    delta: float = Field(0.3, gt=0, le=2)
    min_mentions: int = Field(10, ge=1, description="scored mentions needed in the window and in the baseline")


class KeywordRule(_Section):
    """A crisis term in a mention; at most one alert per term per `cooldown`."""

    enabled: bool = True
    terms: list[str] = Field(default_factory=list)
    cooldown: NonNegativeSeconds = 1800.0
    max_age: Seconds = 86400.0
    critical_mentions: int = Field(5, ge=1, description="this many mentions with the term in a minute: critical")


class InfluencerRule(_Section):
    """A mention by an author with at least `min_followers`; one alert per mention (per author per `cooldown`)."""

    enabled: bool = True
    min_followers: int = Field(10_000, ge=1)
    cooldown: NonNegativeSeconds = 0.0
    max_age: Seconds = 86400.0


class AlertsConfig(_Section):
    """`alerts:` (the defaults of every brand) or `brands.<name>.alerts:` (that brand's overrides).

    A brand's section overrides only the settings it names: `for_brand` merges it over the defaults.
    """

    volume_spike: VolumeSpikeRule = Field(default_factory=lambda: VolumeSpikeRule())
    volume_drop: VolumeDropRule = Field(default_factory=lambda: VolumeDropRule())
    negative_surge: NegativeSurgeRule = Field(default_factory=lambda: NegativeSurgeRule())
    sentiment_drop: SentimentDropRule = Field(default_factory=lambda: SentimentDropRule())
    keywords: KeywordRule = Field(default_factory=KeywordRule)
    influencer: InfluencerRule = Field(default_factory=lambda: InfluencerRule())

    def for_brand(self, overrides: AlertsConfig | None) -> AlertsConfig:
        """These defaults with the settings a brand's `alerts:` section names explicitly."""
        if overrides is None:
            return self
        updates: dict[str, Any] = {}
        for name in overrides.model_fields_set:
            rule = getattr(overrides, name)
            updates[name] = getattr(self, name).model_copy(update={f: getattr(rule, f) for f in rule.model_fields_set})
        return self.model_copy(update=updates)


class FetchConfig(_Section):
    allow_networks: list[str] = Field(default_factory=list)


class ApiKey(_Section):
    key: str
    role: Literal["admin", "responder", "read"] = "read"
    brands: list[str] = Field(default_factory=lambda: ["*"])


class SourceConfig(BaseModel):
    """One entry of `sources:`; each connector validates its own options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["rss", "reddit", "mastodon", "bluesky", "hackernews", "simulate", "accounts", "matomo", "plausible"]


class WebhookConfig(_Section):
    """One entry of `webhooks:`: where new alerts of some brands are POSTed, and how."""

    url: StrictStr
    format: Literal["json", "slack"] = "json"
    secret: StrictStr | None = Field(None, description="HMAC-SHA256 key of X-Ecoute-Signature; no header without")
    brands: list[StrictStr] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parsed = httpx.URL(value)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"only http and https URLs are allowed, not {parsed.scheme or 'no scheme'!r}")
        if not parsed.host:
            raise ValueError("the URL has no host")
        if parsed.userinfo:
            raise ValueError("credentials in webhook URLs are refused")
        return value

    @property
    def id(self) -> str:
        """A stable name for this webhook in delivery records (the URL itself may be a secret, as Slack's are)."""
        return "wh-" + hashlib.sha256(f"{self.format} {self.url}".encode()).hexdigest()[:12]

    @property
    def target(self) -> str:
        """The URL with its path hidden, safe to show."""
        parsed = httpx.URL(self.url)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.host}{port}/…"

    def matches(self, brand: str) -> bool:
        return "*" in self.brands or brand in self.brands


_EMAIL = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")


def _brand_list(value: Any) -> Any:
    return [value] if value == "*" else value


class DigestConfig(_Section):
    """`digest:`: who gets the scheduled digest by e-mail, and for which brands (its webhooks are `webhooks:`)."""

    to: list[StrictStr] = Field(default_factory=list, description="e-mail recipients (with ECOUTE_SMTP_HOST)")
    brands: Annotated[list[StrictStr], BeforeValidator(_brand_list)] = Field(
        default_factory=lambda: ["*"], min_length=1, description='brands with a digest: a list, or "*" for all'
    )

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            # Simple on purpose (the SMTP server has the last word); no spaces, commas or brackets means no header
            # injection and no second recipient hidden in one entry.
            if not _EMAIL.fullmatch(address):
                raise ValueError(f"{address!r} is not an e-mail address (name@domain)")
        return value

    def matches(self, brand: str) -> bool:
        return "*" in self.brands or brand in self.brands


ANY_LANGUAGE = "*"
_LANGUAGE_CODE = re.compile(r"[a-z]{2}")


class TopicTerms(Sequence[str]):
    """One topic of `topics:`: its terms per language (ISO 639-1 codes, `*` for any language).

    The YAML gives a list (`pricing: [price, cheap]`: terms for any language) or a mapping
    (`pricing: {en: [price], fr: [prix, "trop cher"], "*": ["€"]}`). As a sequence it is every term of
    every language, for code that needs only the vocabulary (the simulator).
    """

    __slots__ = ("_all", "by_language")

    def __init__(self, by_language: Mapping[str, Sequence[str]]) -> None:
        self.by_language: dict[str, tuple[str, ...]] = {lang: tuple(terms) for lang, terms in by_language.items()}
        self._all = tuple(dict.fromkeys(term for terms in self.by_language.values() for term in terms))

    @classmethod
    def parse(cls, value: object) -> TopicTerms:
        """A list or a language → list mapping, checked: known language codes, no empty term or list."""
        if isinstance(value, TopicTerms):
            return value
        if isinstance(value, Mapping):
            by_language = dict(value)
        elif isinstance(value, list | tuple):
            by_language = {ANY_LANGUAGE: value}
        else:
            raise ValueError(
                "give a list of terms (e.g. [price, cheap]) or terms per language "
                f"(e.g. {{en: [price], fr: [prix]}}), not {'nothing' if value is None else type(value).__name__}"
            )
        if not by_language:
            raise ValueError("no terms")
        for lang, terms in by_language.items():
            where = f"terms for {lang!r}: " if isinstance(value, Mapping) else ""
            if isinstance(lang, bool):
                raise ValueError(f"language {lang!r}: YAML reads an unquoted no, on, yes… as a boolean; quote the code")
            if not isinstance(lang, str) or not (lang == ANY_LANGUAGE or _LANGUAGE_CODE.fullmatch(lang)):
                raise ValueError(
                    f"language {lang!r}: use an ISO 639-1 code (two lowercase letters, e.g. fr) or '*' for any language"
                )
            if not isinstance(terms, list | tuple):
                raise ValueError(f"{where}give a list of terms, not {type(terms).__name__}")
            if not terms:
                raise ValueError(f"{where}no terms")
            for term in terms:
                if not isinstance(term, str):
                    raise ValueError(f"{where}term {term!r} is not text (quote it)")
                if not term.strip():
                    raise ValueError(f"{where}an empty term")
        return cls(by_language)

    def for_language(self, lang: str | None) -> tuple[str, ...]:
        """The terms that count in a text in `lang`: that language's and those for any language."""
        own = self.by_language.get(lang, ()) if lang and lang != ANY_LANGUAGE else ()
        return self.by_language.get(ANY_LANGUAGE, ()) + own

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._all[index]

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopicTerms):
            return NotImplemented
        return self.by_language == other.by_language

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.by_language.items())))

    def __repr__(self) -> str:
        return f"TopicTerms({self.by_language!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            json_schema_input_schema=handler.generate_schema(list[str] | dict[str, list[str]]),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda terms: {lang: list(words) for lang, words in terms.by_language.items()}
            ),
        )


class EcouteConfig(_Section):
    model_config = ConfigDict(extra="allow", frozen=True)
    brands: dict[str, BrandConfig] = Field(default_factory=dict)
    topics: dict[str, TopicTerms] = Field(default_factory=dict)  # topic → its terms per language
    sources: list[SourceConfig] = Field(default_factory=list)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    api_keys: list[ApiKey] = Field(default_factory=list)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    digest: DigestConfig = Field(default_factory=DigestConfig)

    @field_validator("brands")
    @classmethod
    def _brand_names(cls, value: dict[str, BrandConfig]) -> dict[str, BrandConfig]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
                raise ValueError(f"brand name {name!r}: use lowercase letters, digits, '_', '.', '-'")
        return value

    @field_validator("digest")
    @classmethod
    def _digest_brands(cls, value: DigestConfig, info: ValidationInfo) -> DigestConfig:
        known = info.data.get("brands") or {}
        unknown = [b for b in value.brands if b != "*" and b not in known]
        if unknown:
            raise ValueError(f"brands {', '.join(map(repr, unknown))} are not among the configured brands")
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
