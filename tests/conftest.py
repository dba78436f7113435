"""Session fixtures: one real Apache Kafka broker (KRaft) and one real PostgreSQL server for the whole run,
unique names (topics, databases) per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ecoute.brokers import KafkaCluster
from ecoute.postgres import LocalPostgres
from tests.helpers import tools_required


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """A single-node Apache Kafka 4.x on a free loopback port, started once per test session."""
    cluster = KafkaCluster(size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def bootstrap(kafka: KafkaCluster) -> str:
    return kafka.bootstrap_servers


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server (Debian's binaries) on a free loopback port, started once per test session."""
    server = LocalPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres: LocalPostgres) -> str:
    """A fresh, empty database of the session's server for this test."""
    return postgres.create_database(f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix, so each test has topics (and consumer groups) of its own."""
    return f"test-{uuid.uuid4().hex[:10]}."


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop ECOUTE_* variables of the developer's shell so settings come only from the test."""
    for name in list(os.environ):
        if name.startswith("ECOUTE_"):
            monkeypatch.delenv(name, raising=False)


# Under `make test` (and in CI) the whole suite runs: a skipped test fails the session, naming it.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and tools_required():
        _skipped.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.section("skipped under make test (REQUIRE_TEST_TOOLS), counted as a failure", red=True)
        for line in _skipped:
            terminalreporter.line(line)
