"""``lib.storage.s3``: S3's timestamps read by the standard library, as botocore's own parser reads them."""
from __future__ import annotations

from datetime import timezone

import pytest
from botocore.utils import parse_timestamp

from lib.storage.s3 import S3Settings, S3Store, parse_s3_timestamp


@pytest.mark.parametrize("text", [
    "2026-12-03T17:12:49.000Z",  # a listing's LastModified (XML)
    "2026-12-03T17:12:49Z",
    "Thu, 03 Dec 2026 17:12:49 GMT",  # a GET's Last-Modified header
    "Sun, 29 Feb 2032 00:00:00 GMT",
    "2026-12-03T17:12:49+01:00",  # other forms: botocore's parser
    "1733245969",
])
def test_a_timestamp_reads_as_botocore_reads_it(text):
    assert parse_s3_timestamp(text) == parse_timestamp(text)
    assert parse_s3_timestamp(text).utcoffset() is not None


@pytest.mark.parametrize("text", ["Thu, 32 Dec 2026 17:12:49 GMT", "2026-13-03T17:12:49Z", "yesterday"])
def test_a_malformed_timestamp_fails_as_botocore_fails(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)
    with pytest.raises(ValueError):
        parse_s3_timestamp(text)


def test_the_store_s_client_parses_with_the_standard_library(s3_server):
    name = s3_server.make_bucket("ts")
    s3_server.client().put_object(Bucket=name, Key="k", Body=b"x")
    store = S3Store(S3Settings(bucket=name, endpoint=s3_server.endpoint, region=s3_server.region,
                               access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key))

    listed = store.client.list_objects_v2(Bucket=name)["Contents"][0]["LastModified"]
    got = store.client.get_object(Bucket=name, Key="k")["LastModified"]

    assert listed.tzinfo is timezone.utc and got.tzinfo is timezone.utc  # botocore's parser gives dateutil's tzutc
    assert store.list("")[0].last_modified == listed
