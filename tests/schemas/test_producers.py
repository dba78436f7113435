"""One idempotence rule for every Kafka producer (schemas.producers): the producers the services build, listed
from their source, all go through it; and the rule itself on the embedded broker (which refuses idempotent
producers) and on Apache Kafka, including Faust's producer of the analyzer."""

from __future__ import annotations

import ast
import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ecoute.brokers import KafkaCluster, TansuBroker
from schemas import EcouteConfig, Topics, ensure_topics
from schemas.producers import is_idempotent, start_producer, transactional_producer
from schemas.settings import Idempotence

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {"start_producer", "transactional_producer"}

# Every place a service builds a Kafka producer: (file, enclosing function, helper). A new producer belongs
# here, built by one of the helpers.
PRODUCERS = {
    ("services/analyzer/app.py", "on_start", "start_producer"),  # Faust's producer (stage 2)
    ("services/analyzer/scoring.py", "on_start", "start_producer"),  # stage 1 without transactions
    ("services/analyzer/scoring.py", "_new_transactional_producer", "transactional_producer"),
    ("services/api/consumer.py", "_started", "start_producer"),  # ActionWriter: acks, handled marks
    ("services/api/webhooks.py", "_dispatch", "start_producer"),  # webhook delivery states
    ("services/ingest/producer.py", "_connect_once", "start_producer"),  # mentions, metrics, checkpoints
}


class _Constructions(ast.NodeVisitor):
    """Calls that build producers in one module, each with its innermost enclosing function."""

    def __init__(self, relative: str) -> None:
        self.relative = relative
        self.functions: list[str] = []
        self.through_helpers: set[tuple[str, str, str]] = set()
        self.bypasses: list[str] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        function = self.functions[-1] if self.functions else "<module>"
        where = f"{self.relative}:{node.lineno} in {function}"
        if name in HELPERS:
            self.through_helpers.add((self.relative, function, name))
        elif name in {"AIOKafkaProducer", "_producer_type", "_new_producer"}:
            self.bypasses.append(f"{where}: {name}(...)")
        if any(keyword.arg == "enable_idempotence" for keyword in node.keywords):
            self.bypasses.append(f"{where}: enable_idempotence=")
        self.generic_visit(node)


def producer_constructions(*packages: str) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(file, function, helper) of every helper call, and what bypasses the helpers: a direct
    AIOKafkaProducer(...) or Faust's `_producer_type(...)`/`_new_producer(...)`, or an `enable_idempotence=`
    of one's own."""
    through_helpers: set[tuple[str, str, str]] = set()
    bypasses: list[str] = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            scan = _Constructions(relative)
            scan.visit(ast.parse(path.read_text(encoding="utf-8"), filename=relative))
            through_helpers |= scan.through_helpers
            bypasses += scan.bypasses
    return through_helpers, bypasses


def test_every_producer_of_the_services_goes_through_the_rule() -> None:
    found, bypasses = producer_constructions("services", "ecoute")
    assert bypasses == [], "producers built without schemas.producers"
    assert found == PRODUCERS


def test_the_scan_sees_a_producer_built_by_hand() -> None:
    scan = _Constructions("x.py")
    scan.visit(ast.parse("async def f():\n    p = aiokafka.AIOKafkaProducer(enable_idempotence=True)\n"))
    assert scan.bypasses == ["x.py:2 in f: AIOKafkaProducer(...)", "x.py:2 in f: enable_idempotence="]


def test_the_rule_refuses_options_it_decides() -> None:
    with pytest.raises(TypeError, match="enable_idempotence"):
        transactional_producer("127.0.0.1:1", "t", client_id="x", enable_idempotence=False)


@pytest.fixture
def tansu() -> Iterator[str]:
    broker = TansuBroker().start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@asynccontextmanager
async def started(bootstrap: str, idempotence: Idempotence) -> AsyncIterator[AIOKafkaProducer]:
    producer = await start_producer(bootstrap, idempotence, client_id="test-rule")
    try:
        yield producer
    finally:
        await producer.stop()


async def test_on_the_embedded_broker_auto_falls_back_once_and_on_refuses(
    tansu: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="schemas.producers")
    await ensure_topics(tansu, Topics(), partitions=1, names=["rule"], timeout=20)
    async with asyncio.timeout(30), started(tansu, "auto") as first, started(tansu, "auto") as second:
        assert not is_idempotent(first) and not is_idempotent(second)
        written = await first.send_and_wait("rule", b"v", key=b"k")  # acks=all, written
        assert written.offset == 0
    refusals = [r for r in caplog.records if r.name == "schemas.producers" and r.levelno == logging.WARNING]
    assert len(refusals) == 1 and tansu in refusals[0].getMessage()  # said once, not per producer
    with pytest.raises(KafkaError):
        await start_producer(tansu, "on", client_id="test-rule")
    async with started(tansu, "off") as plain:
        assert not is_idempotent(plain)


@pytest.mark.kafka
async def test_on_apache_kafka_auto_and_on_are_idempotent(kafka: KafkaCluster) -> None:
    for idempotence, expected in (("auto", True), ("on", True), ("off", False)):
        async with started(kafka.bootstrap_servers, idempotence) as producer:  # type: ignore[arg-type]
            assert is_idempotent(producer) is expected, idempotence


@pytest.mark.parametrize("broker", ["tansu", "kafka"])
async def test_fausts_producer_follows_the_rule(broker: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from services.analyzer.app import create_app
    from services.analyzer.settings import AnalyzerSettings

    bootstrap = request.getfixturevalue(broker) if broker == "tansu" else request.getfixturevalue("bootstrap")
    topic = f"rule-{uuid.uuid4().hex[:10]}"
    await ensure_topics(bootstrap, Topics(), partitions=1, names=[topic], timeout=20)
    settings = AnalyzerSettings(kafka_bootstrap_servers=bootstrap, analyzer_data_dir=tmp_path)
    app, _ = create_app(settings, EcouteConfig())
    producer = app.producer
    async with asyncio.timeout(30):
        await producer.start()
        try:
            assert is_idempotent(producer._producer) is (broker == "kafka")  # type: ignore[attr-defined]
            written = await (await producer.send(topic, b"k", b"v", None, None, None))
            assert written.offset == 0
        finally:
            await producer.stop()
