"""What community managers do with alerts and mentions (acks, handled marks), kept on a compacted topic.

Every action is a record on `<prefix>alerts.actions`, keyed `alert:<id>` or `mention:<brand>:<id>` (and
`reply:<brand>:<request id>` / `follow:<brand>:<request id>` for what the inbox posted, engage.py), written
with acks=all and applied to the views when read back, so every replica (and a restarted one) agrees.
Pure: the key rules (the models, alert-ack/1 and mention-handled/1, are in `schemas`); the writer lives with
the other Kafka adapters in `consumer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import AlertAck, MentionHandled, dump, load
from schemas.models import Outreach

# The action models live in schemas; they are re-exported here with the key rules that go with them.
__all__ = [
    "AckRemoved",
    "Action",
    "AlertAck",
    "HandledRemoved",
    "MalformedAction",
    "MentionHandled",
    "Outreach",
    "OutreachRemoved",
    "ack_key",
    "action_key",
    "encode_action",
    "handled_key",
    "outreach_key",
    "parse_action",
]


@dataclass(frozen=True)
class AckRemoved:
    """A tombstone for `alert:<id>`."""

    alert_id: str


@dataclass(frozen=True)
class HandledRemoved:
    """A tombstone for `mention:<brand>:<id>`."""

    brand: str
    mention_id: str


@dataclass(frozen=True)
class OutreachRemoved:
    """A tombstone for `reply:<brand>:<request id>` or `follow:<brand>:<request id>`."""

    key: str


Action = AlertAck | MentionHandled | AckRemoved | HandledRemoved | Outreach | OutreachRemoved


class MalformedAction(ValueError):
    """A record of the actions topic that is neither an action nor a tombstone of one."""


def ack_key(alert_id: str) -> bytes:
    return f"alert:{alert_id}".encode()


def handled_key(brand: str, mention_id: str) -> bytes:
    return f"mention:{brand}:{mention_id}".encode()


def outreach_key(kind: str, brand: str, request_id: str) -> bytes:
    return f"{kind}:{brand}:{request_id}".encode()


def action_key(action: AlertAck | MentionHandled | Outreach) -> bytes:
    if isinstance(action, AlertAck):
        return ack_key(action.alert_id)
    if isinstance(action, Outreach):
        return outreach_key(action.kind, action.brand, action.request_id)
    return handled_key(action.brand, action.mention_id)


def encode_action(action: AlertAck | MentionHandled | Outreach) -> bytes:
    return dump(action)


def parse_action(key: bytes | None, value: bytes | None) -> Action:
    """A record of the actions topic → the action (or the tombstone) it carries; MalformedAction/ValidationError."""
    text = (key or b"").decode("utf-8", errors="replace")
    kind, _, rest = text.partition(":")
    if kind == "alert" and rest:
        if value is None:
            return AckRemoved(rest)
        ack = load(AlertAck, value)
        if ack.alert_id != rest:
            raise MalformedAction(f"key {text!r} names another alert than the value ({ack.alert_id!r})")
        return ack
    if kind == "mention":
        brand, sep, mention_id = rest.partition(":")
        if sep and brand and mention_id:
            if value is None:
                return HandledRemoved(brand, mention_id)
            handled = load(MentionHandled, value)
            if (handled.brand, handled.mention_id) != (brand, mention_id):
                raise MalformedAction(f"key {text!r} names another mention than the value")
            return handled
    if kind in ("reply", "follow"):
        brand, sep, request_id = rest.partition(":")
        if sep and brand and request_id:
            if value is None:
                return OutreachRemoved(text)
            outreach = load(Outreach, value)
            if (outreach.kind, outreach.brand, outreach.request_id) != (kind, brand, request_id):
                raise MalformedAction(f"key {text!r} names another request than the value")
            return outreach
    raise MalformedAction(f"key {text!r} is neither alert:<id>, mention:<brand>:<id> nor reply|follow:<brand>:<id>")
