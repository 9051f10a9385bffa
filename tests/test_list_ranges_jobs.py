"""``jobs.verify`` on a v0.5 replica whose listing takes more than one page (issue 21).

The replica's level 0 starts with 1,100 stray keys (``0-junk-*``, sorting before every LTX
file), so the first page holds none of the backup: everything the restore needs comes from
the key ranges listed after it. The verification must give the reference bytes; a range
whose requests are refused must end as a refused plain listing ends (exit 2, the same
finding), never ``ok`` on part of the listing.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.faultproxy import forbidden
from tests.support.replicas import BuiltReplica
from tests.test_faults import LISTING, assert_inconclusive, assert_verified, verify

pytestmark = pytest.mark.slow

STRAY_KEYS = 1100  # more than S3's page of 1,000


@pytest.fixture
def paged_replica(v5_s3_replica, clone, s3_server) -> BuiltReplica:
    """A copy of the v0.5 S3 replica whose level 0 begins with ``STRAY_KEYS`` keys that are no LTX files."""
    replica = clone(v5_s3_replica)
    client = s3_server.client()
    level0 = f"{replica.prefix}/0000/"

    def put(index: int) -> None:
        client.put_object(Bucket=replica.bucket, Key=f"{level0}0-junk-{index:04d}.tmp", Body=b"junk")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(STRAY_KEYS)))
    assert s3_server.list_keys(replica.bucket, level0)[STRAY_KEYS - 1].endswith(".tmp")
    return replica


def test_a_backup_listed_after_the_first_page_verifies(paged_replica, proxy, scratch, tmp_path):
    run = verify(paged_replica, proxy, scratch, tmp_path)

    assert_verified(run, paged_replica, scratch)
    assert [r for r in proxy.requests if r.key == "" and "start-after=" in r.query]  # listed in ranges


def test_a_refused_range_ends_as_a_refused_listing(paged_replica, proxy, scratch, tmp_path):
    proxy.set_rules([forbidden(method="GET", key=LISTING, query=r"start-after=")])
    ranged = verify(paged_replica, proxy, scratch, tmp_path)
    proxy.set_rules([forbidden(method="GET", key=LISTING)])
    plain = verify(paged_replica, proxy, scratch, tmp_path)

    for run in (ranged, plain):
        assert_inconclusive(run, 40, scratch)
    assert [f["message"] for f in ranged.findings] == [f["message"] for f in plain.findings]
    assert "AccessDenied" in ranged.findings[0]["message"]
