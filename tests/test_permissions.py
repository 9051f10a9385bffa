"""Secrets and permissions guarantees, observed on the real ``python -m jobs.verify`` (issue 9).

* Scratch space is private: 0700 directories, 0600 files, seen from outside while a
  restore is held up by the fault proxy (the child runs with umask 0, so nothing is
  private by accident).
* TLS certificates are verified unless the replica says ``skip-verify: true``: a
  loopback HTTPS front with a self-signed certificate relays to moto.
* Probes run on a read-only connection, and the live database named in litestream.yml
  is never opened for writing.
* Secrets never reach stdout, stderr, the JSON report, Sentry or email, also when the
  run fails on a damaged replica or on storage faults (``tests/test_secrets.py`` covers
  the scrubber and the reporting channels in general).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import stat
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.support.faultproxy import delay, forbidden, reset
from tests.support.replicas import BuiltReplica, replica_listing, sha256_file, write_object
from tests.support.sentry_server import SentryServer
from tests.support.smtp_server import SmtpServer
from tests.test_signals import Job, job_env, proxied_config, scratch_entries

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INCONCLUSIVE = 2
EXIT_INTERRUPTED = 130
JOB_TIMEOUT = 90


def verify(config: Path, env: dict[str, str], logs: Path, *args: str,
           timeout: float = JOB_TIMEOUT) -> tuple[int, dict, Job]:
    job = Job("jobs.verify", "--config", config, "--json", *args, env=env, logs=logs)
    code = job.wait(timeout=timeout)
    text = job.stdout()
    assert text.strip(), f"no report (exit {code}); stderr:\n{job.stderr()[-4000:]}"
    return code, json.loads(text), job


def findings(report: dict) -> list[dict]:
    return [f for db in report["databases"] for f in db["findings"]]


def config_with(replica: BuiltReplica, path: Path, **fields) -> Path:
    """A copy of ``replica``'s litestream.yml with ``fields`` set on its replica."""
    doc = yaml.safe_load(replica.config_path.read_text())
    db = doc["dbs"][0]
    for entry in db.get("replicas") or [db["replica"]]:
        entry.update(fields)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ----------------------------------------------------------------------- scratch permissions


def _tree(root: Path) -> dict[str, tuple[bool, int]]:
    """``{relative path: (is a directory, permission bits)}`` of everything below ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        try:
            st = p.lstat()
        except FileNotFoundError:  # the run removed it meanwhile
            continue
        out[p.relative_to(root).as_posix()] = (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


@pytest.mark.parametrize("fixture, held", [("v3_s3_replica", r"/wal/"), ("v5_s3_replica", r"\.ltx$")],
                         ids=["v0.3", "v0.5"])
def test_scratch_is_0700_directories_and_0600_files_while_restoring(request, proxy, scratch, tmp_path, fixture, held):
    replica = request.getfixturevalue(fixture)
    config = proxied_config(replica, proxy, tmp_path / "litestream.yml")
    proxy.set_rules([delay(120, method="GET", key=held)])  # the restore stops with its output file open
    old_umask = os.umask(0)  # inherited by the child: only explicit modes make anything private
    try:
        job = Job("jobs.verify", "--config", config, env=job_env(scratch), logs=tmp_path)
    finally:
        os.umask(old_umask)
    try:
        assert proxy.wait_for(lambda p: p.matched("delay"), timeout=30), job.stderr()[-4000:]
        deadline = time.monotonic() + 10
        while not any(name.endswith("restored.db") for name in _tree(scratch)) and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = _tree(scratch)
    finally:
        job.signal(signal.SIGTERM)
        code = job.wait(timeout=30)

    files = {name: mode for name, (is_dir, mode) in tree.items() if not is_dir}
    dirs = {name: mode for name, (is_dir, mode) in tree.items() if is_dir}
    assert any(name.endswith("/restored.db") for name in files), tree
    assert dirs and all(mode == 0o700 for mode in dirs.values()), {k: oct(v) for k, v in dirs.items()}
    assert all(mode == 0o600 for mode in files.values()), {k: oct(v) for k, v in files.items()}
    assert code == EXIT_INTERRUPTED
    assert scratch_entries(scratch) == []


# ----------------------------------------------------------------------- TLS


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (as CN and IP SAN) signed by its own key; returns (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsFront:
    """HTTPS on 127.0.0.1 in front of a plain-HTTP endpoint: terminates TLS and relays bytes.

    One thread per connection relays both directions (an SSL socket must not be read and
    written from two threads at once). ``handshakes`` counts completed handshakes,
    ``refused`` the ones the client broke off because it did not trust the certificate.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, upstream: str, cert: Path, key: Path):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cert = cert
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self.refused = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="tls-front", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            client.close()
            return
        self.handshakes += 1
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            tls.close()
            return
        self._relay(tls, upstream)

    def _relay(self, tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        peer = {tls: upstream, upstream: tls}
        idle_since = time.monotonic()
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            try:
                while not self._stop.is_set() and time.monotonic() - idle_since < self.IDLE_SECONDS:
                    ready = {key.fileobj for key, _ in selector.select(timeout=0.2)}
                    if tls.pending():  # decrypted bytes already buffered: select can't see them
                        ready.add(tls)
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        peer[sock].sendall(data)
                        idle_since = time.monotonic()
            except OSError:
                pass
            finally:
                tls.close()
                upstream.close()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def tls_front(s3_server, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    front = TlsFront(s3_server.endpoint, cert, key)
    yield front
    front.stop()


def test_self_signed_endpoint_is_refused_without_skip_verify(v3_s3_replica, tls_front, scratch, tmp_path):
    config = config_with(v3_s3_replica, tmp_path / "litestream.yml", endpoint=tls_front.endpoint)

    code, report, job = verify(config, job_env(scratch), tmp_path)

    assert code == EXIT_INCONCLUSIVE, job.stderr()[-4000:]
    [finding] = findings(report)
    assert finding["inconclusive"] is True
    assert tls_front.endpoint in finding["message"]
    assert re.search(r"SSL|TLS|certificate", finding["message"]), finding
    assert tls_front.refused and tls_front.handshakes == 0
    assert scratch_entries(scratch) == []


def test_skip_verify_true_accepts_the_self_signed_endpoint(v3_s3_replica, tls_front, scratch, tmp_path):
    config = config_with(v3_s3_replica, tmp_path / "litestream.yml", endpoint=tls_front.endpoint,
                         **{"skip-verify": True})

    code, report, job = verify(config, job_env(scratch), tmp_path)

    assert code == EXIT_OK, job.stderr()[-4000:]
    assert report["databases"][0]["restored"]["sha256"] == v3_s3_replica.reference_sha256
    assert tls_front.handshakes > 0


def test_certificate_trusted_through_aws_ca_bundle_verifies(v3_s3_replica, tls_front, scratch, tmp_path):
    config = config_with(v3_s3_replica, tmp_path / "litestream.yml", endpoint=tls_front.endpoint)

    code, report, job = verify(config, job_env(scratch, AWS_CA_BUNDLE=str(tls_front.cert)), tmp_path)

    assert code == EXIT_OK, job.stderr()[-4000:]
    assert report["databases"][0]["restored"]["sha256"] == v3_s3_replica.reference_sha256


# ----------------------------------------------------------------------- read-only probes


def settings_file(path: Path, probes: list[tuple[str, str]]) -> Path:
    doc = {"defaults": {"probes": [{"name": name, "sql": sql} for name, sql in probes]}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def live_state(db_path: Path) -> dict[str, tuple[int, int, str]]:
    """``{name: (size, mtime_ns, sha256)}`` of the live database and every file beside it."""
    out = {}
    for p in sorted(db_path.parent.iterdir()):
        if p.name.startswith(db_path.name):
            st = p.stat()
            out[p.name] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


WRITING_PROBES = [("delete-items", "DELETE FROM items"), ("create-table", "CREATE TABLE x(y)"),
                  ("has-items", "SELECT count(*) > 0 FROM items")]


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v5_file_replica"])
def test_probes_that_write_fail_as_probe_findings_and_change_nothing(request, scratch, tmp_path, fixture):
    replica = request.getfixturevalue(fixture)
    settings = settings_file(tmp_path / "restorable.yml", WRITING_PROBES)
    before = live_state(replica.db_path)

    code, report, job = verify(replica.config_path, job_env(scratch), tmp_path, "--settings", settings)

    assert code == EXIT_FAILED, job.stderr()[-4000:]
    probe_findings = {f["message"].split("'")[1]: f for f in findings(report) if f["kind"] == "probe"}
    assert sorted(probe_findings) == ["create-table", "delete-items"]
    assert all(re.search(r"readonly|not authorized", f["message"]) for f in probe_findings.values()), probe_findings
    [db] = report["databases"]
    assert db["restored"]["sha256"] == replica.reference_sha256
    assert db["tables"] == replica.row_counts
    assert live_state(replica.db_path) == before
    assert scratch_entries(scratch) == []


def test_restored_copy_is_unchanged_after_writing_probes(v3_file_replica, tmp_path):
    from lib.config.sources import load
    from lib.config.settings import load_settings
    from lib.verify import VerifyOptions, run

    settings = load_settings(str(settings_file(tmp_path / "restorable.yml", WRITING_PROBES)), {})
    config = load(str(v3_file_replica.config_path), {})
    kept = tmp_path / "kept.db"
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()

    report = run(config, settings, VerifyOptions(keep_restored=kept, scratch_root=scratch_root,
                                                 deadline=time.monotonic() + 60))

    assert {f.kind for r in report.results for f in r.findings} == {"probe"}
    assert sha256_file(kept) == v3_file_replica.reference_sha256  # read after the probes ran on it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("kept.db")) == ["kept.db"]


@pytest.mark.parametrize("target", ["live-database", "new-file"])
def test_probes_cannot_write_through_an_attached_database(v3_file_replica, clone, scratch, tmp_path, target):
    replica = clone(v3_file_replica)
    shutil.copy(v3_file_replica.db_path, replica.db_path)  # a live database of our own to attack
    victim = replica.db_path if target == "live-database" else tmp_path / "planted.db"
    attached = quote(str(victim))
    settings = settings_file(tmp_path / "restorable.yml", [
        ("attach", f"ATTACH DATABASE 'file:{attached}' AS victim"),
        ("writable", "PRAGMA query_only = 0"),
        ("plant", "CREATE TABLE IF NOT EXISTS victim.planted (x)"),
        ("delete", "DELETE FROM victim.planted"),
    ] + ([("wipe", "DELETE FROM victim.items")] if target == "live-database" else []))
    before = live_state(replica.db_path)

    code, report, job = verify(replica.config_path, job_env(scratch), tmp_path, "--settings", settings)

    assert code == EXIT_FAILED, job.stderr()[-4000:]  # the probes themselves return no true value
    assert live_state(replica.db_path) == before
    assert not (tmp_path / "planted.db").exists()


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v5_file_replica", "v3_s3_replica"])
def test_live_database_is_never_written(request, scratch, tmp_path, fixture):
    replica = request.getfixturevalue(fixture)
    before = live_state(replica.db_path)
    assert replica.db_path.name in before

    code, report, job = verify(replica.config_path, job_env(scratch), tmp_path)

    assert code == EXIT_OK, job.stderr()[-4000:]
    assert live_state(replica.db_path) == before  # no byte, mtime, -wal, -shm or -journal changed
    assert scratch_entries(scratch) == []


# ----------------------------------------------------------------------- secrets on failure paths

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAULTKEY9"
AWS_KEY_ID = "AKIARESTORABLEFAULT7"
CFG_KEY_ID = "cfg-fault-key-id-5566"
CFG_SECRET = "cfg-fault-secret-221133/+z"
DSN_PUBLIC = "feedc0ffee5678ab"
DSN_SECRET = "dsn5ecretfault0042"
SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "fault p@ss/w0rd"
SECRETS = [AWS_SECRET, AWS_KEY_ID, CFG_KEY_ID, CFG_SECRET, DSN_SECRET, SMTP_PASSWORD]


def leaked(text: str, secrets: list[str] = SECRETS) -> list[str]:
    forms = {s: {s, quote(s, safe=""), quote(s, safe="/"), quote(s)} for s in secrets}
    return [s for s, variants in forms.items() if any(v in text for v in variants)]


@pytest.fixture
def channels():
    with SentryServer() as sentry, SmtpServer(credentials=(SMTP_USER, SMTP_PASSWORD)) as smtp:
        yield sentry, smtp


def damage_a_wal_segment(replica: BuiltReplica) -> None:
    key = [k for k in replica_listing(replica) if "/wal/" in k][-2]
    write_object(replica, key, b"\x04\x22\x4d\x18" + b"not an lz4 frame, with a secret? no" * 4)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("failure, log_format", [
    ("damaged-replica", "json"), ("forbidden-snapshot", "text"), ("reset-mid-body", "json"),
])
def test_no_secret_in_any_output_of_a_failing_run(v3_s3_replica, clone, proxy, channels, scratch, tmp_path,
                                                  failure, log_format):
    sentry, smtp = channels
    replica = clone(v3_s3_replica)
    config = config_with(replica, tmp_path / "litestream.yml", endpoint=proxy.endpoint,
                         **{"access-key-id": CFG_KEY_ID, "secret-access-key": CFG_SECRET})
    if failure == "damaged-replica":
        damage_a_wal_segment(replica)
        expected = EXIT_FAILED
    else:
        rule = forbidden(key=r"/snapshots/") if failure == "forbidden-snapshot" else reset(key=r"/wal/")
        proxy.set_rules([rule])
        expected = EXIT_INCONCLUSIVE
    env = job_env(scratch, LOG_FORMAT=log_format, LOG_LEVEL="DEBUG",
                  AWS_SECRET_ACCESS_KEY=AWS_SECRET, AWS_ACCESS_KEY_ID=AWS_KEY_ID,
                  SENTRY_DSN=f"http://{DSN_PUBLIC}:{DSN_SECRET}@127.0.0.1:{sentry.port}/1",
                  SMTP_URL=f"smtp://{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}@127.0.0.1:{smtp.port}",
                  ALERT_EMAIL_TO="ops@example.com")

    code, report, job = verify(config, env, tmp_path, "--max-runtime", "60s")

    assert code == expected, job.stderr()[-4000:]
    assert sentry.wait_for(lambda s: s.events(), timeout=10), "the failure reached Sentry"
    outputs = {"stdout": job.stdout(), "stderr": job.stderr(), "report": json.dumps(report),
               **{f"email {i}": m.raw.decode(errors="replace") for i, m in enumerate(smtp.received)},
               **{f"envelope {i}": b.decode(errors="replace") for i, b in enumerate(sentry.raw_bodies())}}
    assert "botocore" in outputs["stderr"], "DEBUG logging reached the libraries that see the credentials"
    assert {name: leaked(text) for name, text in outputs.items() if leaked(text)} == {}
    for name, text in outputs.items():
        if not name.startswith("envelope"):  # the SDK's envelope header carries the DSN's public key
            assert DSN_PUBLIC not in text, name
    assert scratch_entries(scratch) == []
