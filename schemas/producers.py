"""The one place Écoute builds Kafka producers, so every producer follows ``ECOUTE_KAFKA_IDEMPOTENCE``.

The rule: `on` asks the broker for an idempotent producer (no duplicates from producer retries) and
fails if it refuses; `off` never asks; `auto` asks and, when the broker answers that it will not hand
out a producer id (the embedded Tansu broker does), falls back to a plain acks=all producer. Every
producer is acks=all. Transactional producers are idempotent by definition and are built here too,
so no service constructs an `AIOKafkaProducer` itself (tests/schemas/test_producers.py checks).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from schemas.settings import Idempotence

logger = logging.getLogger(__name__)

# Options the rule decides; a caller passing one would bypass it.
_RULED = frozenset({"acks", "enable_idempotence", "transactional_id", "bootstrap_servers"})

# Brokers whose refusal was already logged as a warning, so a service restarting a producer (or several
# services in one process) say it once per broker, not once per producer.
_refusals_logged: set[str] = set()


def refuses_idempotence(exc: BaseException) -> bool:
    """The broker answered `start()` (so not a connection problem) but would not hand out a producer id."""
    return isinstance(exc, KafkaError) and not isinstance(exc, KafkaConnectionError) and not exc.retriable


def is_idempotent(producer: AIOKafkaProducer) -> bool:
    """Whether this producer numbers its batches (idempotent or transactional)."""
    return getattr(producer, "_txn_manager", None) is not None


async def start_producer(
    bootstrap: str, idempotence: Idempotence, *, client_id: str, **options: Any
) -> AIOKafkaProducer:
    """Build and start an acks=all producer under the idempotence rule; `options` go to AIOKafkaProducer.

    Raises what `start()` raises otherwise (the producer is stopped first): callers keep their own retry policy.
    """
    ruled = _RULED.intersection(options)
    if ruled:
        raise TypeError(f"start_producer decides {sorted(ruled)} itself")
    wanted = idempotence != "off"
    producer = _build(bootstrap, client_id, wanted, options)
    try:
        await producer.start()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        if not (wanted and idempotence == "auto" and refuses_idempotence(exc)):
            raise
        _log_refusal(bootstrap, client_id, exc)
        producer = _build(bootstrap, client_id, False, options)
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
    return producer


def transactional_producer(
    bootstrap: str, transactional_id: str, *, client_id: str, **options: Any
) -> AIOKafkaProducer:
    """An acks=all transactional producer, not started (starting it fences the previous owner of the id).

    Transactions imply idempotence, so the rule does not apply: a caller that may run without them
    (a broker without transactions) uses `start_producer` for that case.
    """
    ruled = _RULED.intersection(options)
    if ruled:
        raise TypeError(f"transactional_producer decides {sorted(ruled)} itself")
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        **options,
    )


def _build(bootstrap: str, client_id: str, idempotent: bool, options: dict[str, Any]) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id=client_id, acks="all", enable_idempotence=idempotent, **options
    )


def _log_refusal(bootstrap: str, client_id: str, exc: BaseException) -> None:
    if bootstrap in _refusals_logged:
        logger.debug("Kafka at %s refused idempotence to %s too (%r); not idempotent", bootstrap, client_id, exc)
        return
    _refusals_logged.add(bootstrap)
    logger.warning(
        "Kafka at %s refused an idempotent producer (%r); ECOUTE_KAFKA_IDEMPOTENCE=auto: producers to it use "
        "acks=all without idempotence, so a producer retry may duplicate a record (ids keep duplicates "
        "detectable). Set it to `on` to refuse to run instead.",
        bootstrap,
        exc,
    )
