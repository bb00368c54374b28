"""No secret in any log line the suite writes: a pytest plugin that tests/conftest.py loads.

The suite's secrets are registered here, in one place: the passwords and tokens its tests write
into URLs and settings (:data:`SUITE_SECRETS`, each with the file it comes from), every private
key generated while the suite runs (Ed25519, RSA and EC generation are wrapped, so the keys that
tests and ``celeriac.protocol.keys.generate_key_pem`` make register themselves), and whatever a
test or helper registers at run time with :func:`register_secret` (a password made with
``secrets.token_hex``). Any PEM private key header in a line counts too, registered or not.

Every log line written during the run is kept: records reaching the root logger (a handler of
this plugin, put back before each test if a logging set-up removed it), every line a worker
process printed (``celeriac.testing``'s output observers, and :func:`record_output` for the
harness in tests/integration/worker_harness.py). The lines go to a spool file per process, one
marker line whenever the running test changes, so the hot path is one buffered write. At the
end of the session the spool is searched for every registered secret (``str.find`` per secret
over the whole text: C speed, a fraction of a second for the suite's output), and a secret found
fails the run: the test that was running, where the line came from, and the line with the
secret replaced by its label. Under xdist each worker scans its own spool and hands its finds
to the controller (``workeroutput``), which reports them all and fails the run.

Not covered: records below the level their logger lets through (the suite logs at the default
WARNING unless a test lowers it), loggers that do not propagate to the root, output of
subprocesses started by other helpers than the two above.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pytest

#: Shorter values are refused: a two-letter password would be found in half the lines.
MIN_LENGTH = 6

#: The secrets written into the suite's sources, with where each comes from. A value that
#: contains another (``s3cret-pw`` contains ``s3cret``) is found by the shorter one.
SUITE_SECRETS: dict[str, str] = {
    "s3cret": "tests/unit/test_signing.py key password (and s3cret-pw, s3cret-tls-pw: "
    "tests/integration/test_sentinel.py and test_tls.py Redis/AMQP passwords)",
    "s3cr3t-Pa55": "tests/integration/test_redis_transport.py Redis password",
    "hunter2": "tests/integration/test_redis_backend.py, tests/contract/test_backend_contract.py "
    "and tests/dashboard/test_dashboard_auth.py URL passwords",
    "secret-pw": "tests/unit/test_rpc_results.py AMQP password",
    "pa@ss-word": "tests/unit/test_amqp_url.py AMQP password",
    "backendpass42": "tests/dashboard/test_dashboard_auth.py backend password",
    "operator-token-for-the-tests": "tests/dashboard/dashboard_support.py OPERATOR_TOKEN",
    "viewer-token-for-the-tests": "tests/dashboard/dashboard_support.py VIEWER_TOKEN",
    "a long enough password": "tests/dashboard/test_dashboard_cli.py dashboard password",
    "celeriac-django-tests": "tests/djangoproject/djtests/settings.py SECRET_KEY",
    "example-only-change-me": "examples/django_project/proj/settings.py SECRET_KEY",
    "PRIVATE KEY-----": "a PEM private key (any, registered or not)",
}

_secrets: dict[str, str] = dict(SUITE_SECRETS)
_lock = threading.Lock()


def register_secret(value: str | bytes, label: str) -> None:
    """Fail the run if ``value`` appears in any log line; ``label`` names it in the report."""
    text = value.decode() if isinstance(value, bytes) else value
    if len(text) < MIN_LENGTH:
        raise ValueError(f"a secret of {len(text)} characters would match everywhere ({label})")
    with _lock:
        _secrets.setdefault(text, label)


def secrets() -> dict[str, str]:
    """Every registered secret and its label."""
    with _lock:
        return dict(_secrets)


# -- private keys register themselves --------------------------------------------------------


def register_private_key(key: Any, label: str) -> None:
    """The forms a generated private key would take in a log: lines of its PEM (unencrypted
    PKCS8) and, for Ed25519, its raw bytes in hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    # An Ed25519 key is one line; in a long key the first lines are ASN.1 headers and the
    # public modulus, the later ones private numbers.
    for line in {body[len(body) // 2], body[-2] if len(body) > 2 else body[-1]}:
        register_secret(line, label)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        register_secret(raw.hex(), label)


def _wrap_key_generation() -> Callable[[], None]:
    """Make every key generated from now on register itself; returns the undo."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    original_ed = ed25519.Ed25519PrivateKey.__dict__["generate"]
    original_rsa, original_ec = rsa.generate_private_key, ec.generate_private_key

    def ed_generate(cls: type[ed25519.Ed25519PrivateKey]) -> ed25519.Ed25519PrivateKey:
        key: ed25519.Ed25519PrivateKey = original_ed.__func__(cls)
        register_private_key(key, "an Ed25519 private key generated by the suite")
        return key

    def rsa_generate(*args: Any, **kwargs: Any) -> rsa.RSAPrivateKey:
        key = original_rsa(*args, **kwargs)
        register_private_key(key, "an RSA private key generated by the suite")
        return key

    def ec_generate(*args: Any, **kwargs: Any) -> ec.EllipticCurvePrivateKey:
        key = original_ec(*args, **kwargs)
        register_private_key(key, "an EC private key generated by the suite")
        return key

    ed25519.Ed25519PrivateKey.generate = classmethod(ed_generate)  # type: ignore[method-assign,assignment]
    rsa.generate_private_key = rsa_generate
    ec.generate_private_key = ec_generate

    def undo() -> None:
        ed25519.Ed25519PrivateKey.generate = original_ed  # type: ignore[method-assign]
        rsa.generate_private_key = original_rsa
        ec.generate_private_key = original_ec

    return undo


# -- the spool: every line, with the test that was running ------------------------------------

#: Starts a marker line naming the test whose lines follow (never in a real log line).
MARK = "\x00test "


class Spool:
    """Lines appended from any thread to a temporary file of this process."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="celeriac-log-spool-", suffix=".txt")
        self.path = Path(name)
        self._file: IO[str] = os.fdopen(handle, "w", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._test = ""

    def start_test(self, nodeid: str) -> None:
        with self._lock:
            if nodeid != self._test:
                self._test = nodeid
                self._file.write(f"{MARK}{nodeid}\n")

    def write(self, source: str, text: str) -> None:
        lines = text.splitlines() or [""]
        with self._lock:
            for line in lines:
                self._file.write(f"{source}\t{line}\n")

    def read(self) -> str:
        with self._lock:
            self._file.flush()
        return self.path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        with self._lock:
            self._file.close()
        self.path.unlink(missing_ok=True)


_spool: Spool | None = None


def record_output(source: str, line: str) -> None:
    """Keep a line a process printed (``source`` names it); nothing when the plugin is off."""
    spool = _spool
    if spool is not None:
        spool.write(source, line)


class RootHandler(logging.Handler):
    """Every record that reaches the root logger, message and traceback, into the spool."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                text = f"{text}\n{record.exc_text}"
            if record.stack_info:
                text = f"{text}\n{record.stack_info}"
            record_output(f"log {record.name} {record.levelname}", text)
        except Exception:  # a log record must never break the test that wrote it
            self.handleError(record)


# -- the scan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Find:
    """One line holding a secret, as reported (the secret itself never included)."""

    label: str
    test: str
    source: str
    line: str

    def __str__(self) -> str:
        return f"{self.label}\n    in {self.test or '(outside any test)'} [{self.source}]\n" + (
            f"    {self.line}"
        )


def redact(line: str, known: dict[str, str]) -> str:
    """``line`` with every registered secret in it replaced by ``<secret: label>``."""
    for value in sorted(known, key=len, reverse=True):
        if value in line:
            line = line.replace(value, f"<secret: {known[value]}>")
    return line if len(line) <= 400 else line[:400] + "..."


def scan(text: str, known: dict[str, str], per_secret: int = 5) -> tuple[list[Find], int]:
    """The spool lines that hold a registered secret (at most ``per_secret`` of each secret
    reported) and how many lines held one in all."""
    marks: list[int] = []
    tests: list[str] = []
    at = text.find(MARK)
    while at != -1:
        end = text.find("\n", at)
        marks.append(at)
        tests.append(text[at + len(MARK) : end])
        at = text.find(MARK, end)
    finds: list[Find] = []
    seen: set[int] = set()
    for value, label in known.items():
        shown = 0
        at = text.find(value)
        while at != -1:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            end = len(text) if end == -1 else end
            if start not in seen and not text.startswith(MARK, start):  # not a test's id
                seen.add(start)
                if shown < per_secret:
                    source, _, line = text[start:end].partition("\t")
                    index = bisect.bisect_right(marks, start) - 1
                    test = tests[index] if index >= 0 else ""
                    finds.append(Find(label, test, source, redact(line, known)))
                    shown += 1
            at = text.find(value, end)
    return finds, len(seen)


# -- the plugin's hooks -----------------------------------------------------------------------


class SecretsScan:
    """Installed by :func:`pytest_configure`; one per process (each xdist worker has its own)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.handler = RootHandler()
        self.finds: list[dict[str, str]] = []
        self.total = 0
        self.stats: dict[str, float] = {"lines": 0, "bytes": 0, "secrets": 0, "seconds": 0.0}
        self._undo_keys = _wrap_key_generation()
        self._undo_observer: Callable[[], None] = lambda: None
        with contextlib.suppress(ImportError, AttributeError):
            from celeriac.testing import observe_output

            self._undo_observer = observe_output(self._worker_line)

    @staticmethod
    def _worker_line(process: Any, line: str) -> None:
        record_output(f"worker process {process.pid}", line)

    def _ensure_handler(self) -> None:
        root = logging.getLogger()
        if self.handler not in root.handlers:
            root.addHandler(self.handler)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if _spool is not None:
            _spool.start_test(nodeid)
        self._ensure_handler()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if _spool is not None:
            _spool.start_test("")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        global _spool
        spool, _spool = _spool, None
        logging.getLogger().removeHandler(self.handler)
        if spool is not None:
            started = time.perf_counter()
            text, known = spool.read(), secrets()
            finds, total = scan(text, known)
            spool.close()
            self.finds.extend(asdict(find) for find in finds)
            self.total += total
            self.stats["lines"] += text.count("\n")
            self.stats["bytes"] += len(text)
            self.stats["secrets"] = max(self.stats["secrets"], len(known))
            self.stats["seconds"] += time.perf_counter() - started
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports
            workeroutput["secrets_scan"] = {
                "finds": self.finds,
                "total": self.total,
                "stats": self.stats,
            }
            return
        if self.total:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        found = getattr(node, "workeroutput", {}).get("secrets_scan")
        if found:
            self.finds.extend(found["finds"])
            self.total += found["total"]
            for key, value in found["stats"].items():
                if key == "secrets":
                    self.stats[key] = max(self.stats[key], value)
                else:
                    self.stats[key] += value

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        stats = self.stats
        terminalreporter.write_line(
            f"secrets scan: {stats['lines']:,.0f} log lines ({stats['bytes'] / 1e6:.1f} MB), "
            f"{stats['secrets']:.0f} secrets, {stats['seconds']:.2f} s of scanning"
        )
        if not self.total:
            return
        terminalreporter.section("secrets in log lines", sep="=", red=True, bold=True)
        terminalreporter.line(
            f"{self.total} log line(s) written during the run hold a registered secret "
            "(tests/_secrets_scan.py); the run fails:"
        )
        for find in self.finds:
            terminalreporter.line(str(Find(**find)))

    def close(self) -> None:
        self._undo_keys()
        self._undo_observer()
        logging.getLogger().removeHandler(self.handler)


_PLUGIN = "celeriac-secrets-scan"


def pytest_configure(config: pytest.Config) -> None:
    global _spool
    if config.pluginmanager.has_plugin(_PLUGIN):
        return
    _spool = Spool()
    _spool.start_test("")
    plugin = SecretsScan(config)
    plugin._ensure_handler()
    config.pluginmanager.register(plugin, _PLUGIN)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _spool
    plugin = config.pluginmanager.get_plugin(_PLUGIN)
    if isinstance(plugin, SecretsScan):
        plugin.close()
        config.pluginmanager.unregister(plugin)
    if _spool is not None:
        _spool.close()
        _spool = None


@contextlib.contextmanager
def spooling() -> Iterator[Spool]:
    """A spool of its own for the block (for a test of the scan, without a pytest run)."""
    global _spool
    previous, _spool = _spool, Spool()
    try:
        yield _spool
    finally:
        _spool.close()
        _spool = previous


def report(text: str, known: dict[str, str] | None = None) -> Sequence[Find]:
    """The finds of :func:`scan` over ``text`` with the registered secrets (or ``known``)."""
    return scan(text, secrets() if known is None else known)[0]
