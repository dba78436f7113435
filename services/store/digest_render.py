"""The digest's document (digest/1) and its renderings: JSON and Slack webhook bodies, a plain-text and an HTML
e-mail. Pure: a report in, bytes or a message out; what goes in a digest is decided in services/store/digest.py.

Everything that comes from mentions (texts, author names, URLs) is someone else's text: escaped for HTML and
Slack, and only http(s) URLs become links.
"""

from __future__ import annotations

import hashlib
import html
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas import Alert, ScoredMention
from schemas.history.report import HEADLINE_FIGURES, PeriodFigures, Report
from schemas.webhooks import mrkdwn

DigestEvery = Literal["week", "day", "period"]
EXCERPT_CHARS = 240

FIGURE_LABELS = {
    "mentions": "Mentions",
    "positive_share": "Positive share",
    "sentiment_avg": "Average sentiment",
    "engagement": "Engagement",
    "reach": "Reach",
    "unique_authors": "Unique authors",
    "share_of_voice": "Share of voice",
    "love_index": "Love index",
}
# How a figure reads: a count, a share (shown in %, its change in points), a score.
_SHARES = {"positive_share", "share_of_voice"}
_SCORES = {"sentiment_avg", "love_index"}


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class DigestPeriod(_Doc):
    start: datetime
    end: datetime = Field(description="exclusive")


class DigestFigure(_Doc):
    name: str = Field(description="one of the report's headline figures")
    label: str
    current: int | float | None
    previous: int | float | None
    change: int | float | None = Field(None, description="current − previous")
    change_pct: float | None = Field(None, description="change / previous × 100; null when previous is 0 or null")


class DigestMention(_Doc):
    id: str
    url: str | None
    source: str
    site: str | None
    author: str | None = Field(description="handle, else name, else id")
    published_at: datetime
    excerpt: str
    engagement: int = Field(description="likes + shares + comments")
    likes: int
    shares: int
    comments: int
    sentiment: str = Field(description="positive | neutral | negative | unscored")
    compound: float


class DigestAlert(_Doc):
    id: str
    kind: str
    severity: str
    message: str
    created_at: datetime


class Digest(_Doc):
    """digest/1: a brand's figures over a period against the period before, its top mentions and its alerts."""

    schema_: Literal["digest/1"] = Field("digest/1", alias="schema")
    id: str = Field(description="<brand>|<period start>: the same for every channel and every attempt")
    brand: str
    every: DigestEvery
    period: DigestPeriod
    previous: DigestPeriod
    figures: list[DigestFigure] = Field(description="headline figures with their change against the previous period")
    totals: PeriodFigures = Field(description="every figure of the period (the history report's)")
    top_mentions: list[DigestMention] = Field(description="by engagement")
    alerts: list[DigestAlert] = Field(description="newest first, at most a few of them")
    alerts_total: int = Field(description="alerts of the period, all of them")
    alerts_by_severity: dict[str, int]
    link: str | None = Field(None, description="the live page's history view, when ECOUTE_PUBLIC_URL is set")
    generated_at: datetime


# ---------------------------------------------------------------------------------------------- the document


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def digest_id(brand: str, period_start: datetime) -> str:
    return f"{brand}|{iso(period_start)}"


def excerpt(mention: ScoredMention, limit: int = EXCERPT_CHARS) -> str:
    text = f"{mention.title}: {mention.text}" if mention.title else mention.text
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def digest_mention(mention: ScoredMention) -> DigestMention:
    e = mention.engagement
    return DigestMention(
        id=mention.id,
        url=mention.url,
        source=mention.source,
        site=mention.site,
        author=mention.author.handle or mention.author.name or mention.author.id,
        published_at=mention.published_at,
        excerpt=excerpt(mention),
        engagement=e.likes + e.shares + e.comments,
        likes=e.likes,
        shares=e.shares,
        comments=e.comments,
        sentiment=mention.sentiment.label,
        compound=float(mention.sentiment.compound),
    )


def digest_alert(alert: Alert) -> DigestAlert:
    return DigestAlert(
        id=alert.id, kind=alert.kind, severity=alert.severity, message=alert.message, created_at=alert.created_at
    )


def build_digest(
    report: Report,
    every: DigestEvery,
    *,
    alerts_by_severity: dict[str, int],
    link: str | None,
    generated_at: datetime,
) -> Digest:
    """The digest of a report made with its top mentions and alerts (brand_report(top_mentions=…, alerts=…))."""
    figures = [
        DigestFigure(name=name, label=FIGURE_LABELS[name], **report.changes[name].model_dump())
        for name in HEADLINE_FIGURES
        if report.changes[name].current is not None or report.changes[name].previous is not None
    ]
    return Digest(
        id=digest_id(report.brand, report.since),
        brand=report.brand,
        every=every,
        period=DigestPeriod(start=report.since, end=report.until),
        previous=DigestPeriod(start=report.previous_since, end=report.previous_until),
        figures=figures,
        totals=report.totals,
        top_mentions=[digest_mention(m) for m in report.top_mentions or []],
        alerts=[digest_alert(a) for a in report.alerts or []],
        alerts_total=sum(alerts_by_severity.values()),
        alerts_by_severity=dict(sorted(alerts_by_severity.items())),
        link=link,
        generated_at=generated_at,
    )


# ---------------------------------------------------------------------------------------------- words and numbers


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y}"


def period_words(digest: Digest) -> str:
    """'2 Mar – 8 Mar 2026' (a week), '2 Mar 2026' (a day), or the exact UTC bounds of another period."""
    start, end = digest.period.start.astimezone(UTC), digest.period.end.astimezone(UTC)
    if digest.every == "day":
        return f"{start:%a} {_day(start)}"
    if digest.every == "week":
        last = end - timedelta(days=1)
        first = f"{start.day} {start:%b}" if start.year == last.year else _day(start)
        return f"{first} – {_day(last)}"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"


def before_words(digest: Digest) -> str:
    return {"week": "the week before", "day": "the day before", "period": "the period before"}[digest.every]


def title(digest: Digest) -> str:
    kind = {"week": "Weekly digest", "day": "Daily digest", "period": "Digest"}[digest.every]
    return f"{kind} · {digest.brand} · {period_words(digest)}"


def figure_value(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    if name in _SHARES:
        return f"{value * 100:.1f} %"
    if name == "sentiment_avg":
        return f"{value:+.2f}"
    if name in _SCORES:
        return f"{value:.1f}"
    return f"{int(value):,}"


def figure_change(figure: DigestFigure) -> str:
    """The change against the previous period: in points for shares, absolute for scores, else in percent."""
    if figure.change is None:
        return "no comparison"
    if figure.name in _SHARES:
        return f"{figure.change * 100:+.1f} pts"
    if figure.name == "sentiment_avg":
        return f"{figure.change:+.2f}"
    if figure.name in _SCORES:
        return f"{figure.change:+.1f}"
    if figure.change_pct is None:
        return "none before" if figure.change else "±0"
    return f"{figure.change_pct:+.1f} %"


def _author(mention: DigestMention) -> str:
    return mention.author or mention.site or mention.source


def _link(url: str | None) -> str | None:
    return url if url is not None and url.startswith(("http://", "https://")) else None


def _alert_line(alert: DigestAlert) -> str:
    return f"[{alert.severity}] {alert.kind.replace('_', ' ')}: {alert.message} ({alert.created_at:%a %d %b %H:%M} UTC)"


# ---------------------------------------------------------------------------------------------- renderings


def render_json(digest: Digest) -> bytes:
    return digest.model_dump_json(by_alias=True).encode()


def render_text(digest: Digest) -> str:
    lines = [f"Écoute · {title(digest)}", "", f"Figures (change against {before_words(digest)})"]
    width = max(len(f.label) for f in digest.figures) if digest.figures else 0
    for figure in digest.figures:
        value = figure_value(figure.name, figure.current)
        lines.append(f"{figure.label + ':':<{width + 1}} {value:>12}   {figure_change(figure)}")
    lines += ["", f"Top mentions ({len(digest.top_mentions)})"]
    if not digest.top_mentions:
        lines.append("  none")
    for rank, mention in enumerate(digest.top_mentions, 1):
        lines.append(
            f"{rank}. {_author(mention)} · {mention.engagement:,} engagement · {mention.sentiment}"
            f" · {mention.published_at:%a %d %b %H:%M} UTC"
        )
        lines.append(f"   {mention.excerpt}")
        if mention.url:
            lines.append(f"   {mention.url}")
    lines += ["", f"Alerts ({digest.alerts_total})"]
    if not digest.alerts:
        lines.append("  none")
    lines += [f"- {_alert_line(alert)}" for alert in digest.alerts]
    if digest.alerts_total > len(digest.alerts):
        lines.append(f"  … and {digest.alerts_total - len(digest.alerts)} more")
    if digest.link:
        lines += ["", f"History: {digest.link}"]
    lines += ["", f"Digest {digest.id}"]
    return "\n".join(lines) + "\n"


def render_html(digest: Digest) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(f.label)}</td><td style='text-align:right'><b>{e(figure_value(f.name, f.current))}</b></td>"
        f"<td style='color:#555'>{e(figure_change(f))}</td></tr>"
        for f in digest.figures
    )
    mentions = []
    for mention in digest.top_mentions:
        url = _link(mention.url)
        text = e(mention.excerpt)
        body = f"<a href='{e(url, quote=True)}'>{text}</a>" if url else text
        meta = f"{e(_author(mention))} · {mention.engagement:,} engagement · {e(mention.sentiment)}"
        mentions.append(f"<li><div>{body}</div><div style='color:#555'>{meta}</div></li>")
    alerts = [f"<li>{e(_alert_line(alert))}</li>" for alert in digest.alerts]
    if digest.alerts_total > len(digest.alerts):
        alerts.append(f"<li>… and {digest.alerts_total - len(digest.alerts)} more</li>")
    link = _link(digest.link)
    parts = [
        "<!doctype html><html><body style='font-family:sans-serif'>",
        f"<h2>{e(title(digest))}</h2>",
        f"<table cellpadding='4'><tr><th></th><th>This {e(digest.every)}</th>"
        f"<th>Against {e(before_words(digest))}</th></tr>{rows}</table>",
        f"<h3>Top mentions</h3><ol>{''.join(mentions) or '<li>none</li>'}</ol>",
        f"<h3>Alerts ({digest.alerts_total})</h3><ul>{''.join(alerts) or '<li>none</li>'}</ul>",
        f"<p><a href='{e(link, quote=True)}'>Open the history</a></p>" if link else "",
        f"<p style='color:#888;font-size:small'>Écoute digest {e(digest.id)}</p>",
        "</body></html>",
    ]
    return "".join(parts)


def slack_payload(digest: Digest) -> dict[str, Any]:
    """A Slack incoming-webhook message (text fallback + Block Kit blocks)."""
    fields = [
        f"*{f.label}*\n{figure_value(f.name, f.current)} ({figure_change(f)})" for f in digest.figures[:10]
    ]  # Slack takes at most 10 fields per section
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Écoute · {title(digest)}"[:150], "emoji": True}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": t[:2000]} for t in fields]})
    lines = []
    for rank, mention in enumerate(digest.top_mentions, 1):
        url = _link(mention.url)
        text = mrkdwn(mention.excerpt[:200])
        shown = f"<{mrkdwn(url)}|{text}>" if url else text
        lines.append(
            f"{rank}. {shown}\n      _{mrkdwn(_author(mention))} · {mention.engagement:,} engagement"
            f" · {mention.sentiment}_"
        )
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": ("*Top mentions*\n" + ("\n".join(lines) or "none"))}}
    )
    alert_lines = [f"• {mrkdwn(_alert_line(a))}" for a in digest.alerts[:10]]
    if digest.alerts_total > len(alert_lines):
        alert_lines.append(f"… and {digest.alerts_total - len(alert_lines)} more")
    blocks.append(
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*Alerts ({digest.alerts_total})*\n" + ("\n".join(alert_lines) or "none"),
            },
        }
    )
    for block in blocks:  # a section's text holds 3000 characters at most
        if "text" in block and block["text"]["type"] == "mrkdwn":
            block["text"]["text"] = block["text"]["text"][:3000]
    context = [f"Écoute digest `{mrkdwn(digest.id)}`"]
    link = _link(digest.link)
    if link:
        context.append(f"<{mrkdwn(link)}|Open the history>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in context]})
    mentions = next((f for f in digest.figures if f.name == "mentions"), None)
    summary = f"{figure_value('mentions', mentions.current)} mentions ({figure_change(mentions)})" if mentions else ""
    return {"text": f"Écoute · {title(digest)}: {summary}, {digest.alerts_total} alerts", "blocks": blocks}


def render_body(digest: Digest, fmt: str) -> bytes:
    """A webhook's body: digest/1 (format json) or a Slack message."""
    if fmt == "slack":
        return orjson.dumps(slack_payload(digest))
    return render_json(digest)


def message_id(digest: Digest, sender: str) -> str:
    """The same Message-ID at every attempt: a mail system that keeps it can drop a repeat."""
    domain = sender.rsplit("@", 1)[-1] or "ecoute"
    return f"<digest.{hashlib.sha256(digest.id.encode()).hexdigest()[:32]}@{domain}>"


def render_email(digest: Digest, sender: str, recipients: list[str]) -> EmailMessage:
    """A multipart/alternative e-mail: the plain text first, the HTML second (what mail clients prefer)."""
    message = EmailMessage()
    mentions = next((f for f in digest.figures if f.name == "mentions"), None)
    summary = f": {figure_value('mentions', mentions.current)} mentions ({figure_change(mentions)})" if mentions else ""
    message["Subject"] = f"Écoute · {title(digest)}{summary}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(digest.generated_at.astimezone(UTC))
    message["Message-ID"] = message_id(digest, sender)
    message["X-Ecoute-Digest"] = digest.id
    message.set_content(render_text(digest))
    message.add_alternative(render_html(digest), subtype="html")
    return message


__all__ = [
    "Digest",
    "DigestAlert",
    "DigestEvery",
    "DigestFigure",
    "DigestMention",
    "DigestPeriod",
    "build_digest",
    "digest_id",
    "figure_change",
    "figure_value",
    "message_id",
    "period_words",
    "render_body",
    "render_email",
    "render_html",
    "render_json",
    "render_text",
    "slack_payload",
    "title",
]
