"""One replica entry of litestream.yml (or a URL) turned into a ReplicaConfig: type, bucket, path, endpoint, credentials."""
from __future__ import annotations

import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from lib.config.encryption import read_encryption
from lib.config.environment import ACCESS_KEY_VARS, BUCKET_VARS, SECRET_KEY_VARS, _Context, _join
from lib.config.model import DEFAULT_ORIGIN, DEFAULT_SYNC_INTERVAL, SUPPORTED_TYPES, ReplicaConfig
from lib.config.parsing import printable
from lib.config.urls import S3Url, looks_like_url, parse_file_url, parse_s3_url, show, url_scheme
from lib.errors import ConfigError


def _build_replica(raw: Any, key: str, ctx: _Context) -> ReplicaConfig:
    raw = ctx.mapping(raw, key)
    url = ctx.text(raw, "url", key)
    kind = _replica_type(raw, url, key, ctx)
    sync_interval, sync_origin = _pick(
        ctx.keyed(raw, "sync-interval", key, ctx.duration), ctx.top.get("sync_interval"),
        (DEFAULT_SYNC_INTERVAL, DEFAULT_ORIGIN))
    name, name_origin = ctx.keyed(raw, "name", key)
    retention, retention_origin = ctx.keyed(raw, "retention", key, ctx.duration)
    built = (_file_replica if kind == "file" else _s3_replica)(raw, url, key, ctx)
    type_origin = ctx.where(_join(key, "url" if url else "type")) if url or raw.get("type") else DEFAULT_ORIGIN
    origins = dict(built.origins, type=type_origin, sync_interval_seconds=sync_origin)
    if name is not None:
        origins["name"] = name_origin
    if retention is not None:
        origins["retention_seconds"] = retention_origin
    return replace(built, name=name or kind, retention_seconds=retention, sync_interval_seconds=sync_interval,
                   encryption=read_encryption(raw, key, ctx), origins=tuple(origins.items()))


def _replica_type(raw: Mapping, url: str | None, key: str, ctx: _Context) -> str:
    """The replica type: the URL scheme, else ``type:``, else ``file`` (Litestream's rule)."""
    explicit = ctx.text(raw, "type", key)
    scheme = url_scheme(url, ctx.where(_join(key, "url"))) if url else None
    if scheme and explicit and scheme != explicit:
        raise ctx.fail(
            _join(key, "type"),
            f"type {show(explicit)} contradicts the url scheme {show(scheme)}; remove type: or fix url:",
        )
    kind = scheme or explicit or "file"
    if kind not in SUPPORTED_TYPES:
        origin = "url" if scheme else "type"
        raise ctx.fail(
            _join(key, origin),
            f"replica type {show(kind)} is not supported by restorable (supported: {', '.join(SUPPORTED_TYPES)})",
        )
    return kind


def _file_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    path = ctx.text(raw, "path", key)
    if url is not None and path is not None:
        raise ctx.fail(key, "cannot specify url & path for file replica; keep one of them")
    if url is not None:
        path = parse_file_url(url, ctx.where(_join(key, "url")))
        origin = ctx.where(_join(key, "url"))
    elif path is None:
        raise ctx.fail(
            _join(key, "path"),
            "a file replica needs a directory; set path: /backups/app.db or url: file:///backups/app.db",
        )
    elif looks_like_url(path):
        raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
    else:
        origin = ctx.where(_join(key, "path"))
    if "\x00" in path:
        raise ctx.fail(_join(key, "path"), "contains a NUL byte; name the replica directory")
    return ReplicaConfig(name="file", type="file", path=_absolute(path, ctx.cwd), origins=(("path", origin),))


def check_file_replica(replica: ReplicaConfig) -> None:
    """Refuse a file replica whose path is missing or is not a folder, before any listing.

    A file, a device or a missing path can never hold a backup: retrying it and calling
    the run inconclusive would hide a wrong path (or an unmounted volume) for good.
    Other failures (permissions) are left to the run, which reports them.

    :raises ConfigError: naming the path, where it came from and the fix.
    """
    if replica.type != "file":
        return
    try:
        mode = os.stat(replica.path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        problem = "does not exist"
    except OSError:
        return
    else:
        if stat.S_ISDIR(mode):
            return
        problem = "is a regular file" if stat.S_ISREG(mode) else "is not a folder (a device, socket or pipe)"
    raise ConfigError(f"{replica.origin('path')}: file replica {printable(replica.path)} {problem}; name the replica "
                      "folder Litestream writes to (is its volume mounted?)")


def _s3_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    url_origin = ctx.where(_join(key, "url"))
    if url is not None:
        for conflicting in ("path", "bucket"):
            if ctx.text(raw, conflicting, key) is not None:
                raise ctx.fail(
                    key,
                    f"cannot specify url & {conflicting} for s3 replica; put them in the url or drop url:",
                )
        parsed = parse_s3_url(url, url_origin)
        path_origin = url_origin
    else:
        path = ctx.text(raw, "path", key) or ""
        if looks_like_url(path):
            raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
        parsed = S3Url(bucket=ctx.text(raw, "bucket", key), path=path)
        path_origin = ctx.where(_join(key, "path")) if path else DEFAULT_ORIGIN
    fields = {
        "bucket": _pick((parsed.bucket, url_origin if url else ctx.where(_join(key, "bucket"))),
                        ctx.top.get("bucket"), ctx.env.get("bucket")),
        "endpoint": _pick(ctx.keyed(raw, "endpoint", key),
                          (parsed.endpoint, _url_part(url_origin, parsed.endpoint_from_query, "endpoint")),
                          ctx.top.get("endpoint"), ctx.env.get("endpoint")),
        "region": _pick(ctx.keyed(raw, "region", key),
                        (parsed.region, _url_part(url_origin, parsed.region_from_query, "region")),
                        ctx.top.get("region"), ctx.env.get("region")),
        "force_path_style": _path_style(ctx.keyed(raw, "force-path-style", key, ctx.flag), parsed, url_origin, ctx),
        "skip_verify": _pick(ctx.keyed(raw, "skip-verify", key, ctx.flag), (parsed.skip_verify, url_origin),
                             ctx.top.get("skip_verify"), (False, DEFAULT_ORIGIN)),
        **_credentials(raw, key, ctx),
    }
    if not fields["bucket"][0]:
        raise _missing_bucket(key, url is not None, ctx)
    _check_bucket(*fields["bucket"])
    if fields["region"][0] is not None:
        _check_region(*fields["region"])
    origins = {name: origin for name, (value, origin) in fields.items() if value is not None and origin}
    origins["path"] = path_origin
    return ReplicaConfig(name="s3", type="s3", path=parsed.path, origins=tuple(origins.items()),
                         **{name: value for name, (value, _) in fields.items()})


def _url_part(url_origin: str, from_query: bool, name: str) -> str:
    return f"{url_origin} (?{name}=)" if from_query else f"{url_origin} (host)"


# What botocore itself accepts as a Bucket parameter (anything else fails before any
# request is sent), plus access point and Outposts ARNs, which it also takes.
_VALID_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")


def _check_bucket(bucket: str, origin: str) -> None:
    """Refuse a bucket name no S3 client can send, naming where it came from.

    :raises ConfigError: the name has characters outside ``[A-Za-z0-9._-]``; an
        unresolved ``${...}`` or ``${{...}}`` reference gets its own hint.
    """
    if _VALID_BUCKET.fullmatch(bucket) or bucket.startswith("arn:"):
        return
    hint = ("use letters, digits, '.', '-' and '_'" if not set(bucket) & set("${}") else
            "it looks like an unresolved variable reference: Railway fills ${{Service.VARIABLE}} only when "
            "that service and variable exist, and litestream.yml needs ${VARIABLE}")
    raise ConfigError(f"{origin}: bucket {show(bucket)} is not a valid bucket name; {hint}")


# botocore's own rule for a region name (a DNS label); anything else fails when the client is made.
_VALID_REGION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _check_region(region: str, origin: str) -> None:
    """Refuse a region no S3 client accepts (``us east 1``), naming where it came from.

    :raises ConfigError: the region is not a DNS label of letters, digits and ``-``.
    """
    if not _VALID_REGION.fullmatch(region):
        raise ConfigError(f"{origin}: region {show(region)} is not a valid region name; use letters, digits and "
                          "'-', e.g. us-east-1 or auto")


def _missing_bucket(key: str, from_url: bool, ctx: _Context) -> ConfigError:
    env = " or ".join(BUCKET_VARS)
    if from_url:
        return ctx.fail(
            _join(key, "url"),
            f"the s3 url names no bucket; use s3://BUCKET/PATH or set {env} in the environment",
        )
    return ctx.fail(
        _join(key, "bucket"),
        f"the s3 replica has no bucket; set bucket: (or url: s3://BUCKET/PATH) or set {env} in the environment",
    )


def _path_style(explicit: tuple[bool | None, str], parsed: S3Url, url_origin: str, ctx: _Context
                ) -> tuple[bool | None, str]:
    """Path-style addressing: explicit setting, forced by a provider URL, then environment.

    Litestream applies a provider host's path style whenever the configured value is not
    true, so a provider URL wins even over ``force-path-style: false``. ``None`` leaves the
    choice to the storage layer (path style exactly when there is an endpoint).
    """
    style, origin = _pick(explicit, (parsed.force_path_style, f"{url_origin} (?forcePathStyle=)"),
                          ctx.top.get("force_path_style"))
    if parsed.is_provider_path_style and not style:
        return True, f"{url_origin} (provider host)"
    if style is not None:
        return style, origin
    return ctx.env.get("force_path_style")


def _credentials(raw: Mapping, key: str, ctx: _Context) -> dict[str, tuple[str | None, str]]:
    """The key pair (and session token): replica keys, else top-level keys (per field), else the environment."""
    access = _pick(ctx.keyed(raw, "access-key-id", key), ctx.top.get("access_key_id"))
    secret = _pick(ctx.keyed(raw, "secret-access-key", key), ctx.top.get("secret_access_key"))
    if access[0] or secret[0]:
        if not (access[0] and secret[0]):
            pair = ("access-key-id", "secret-access-key")
            present, absent = pair if access[0] else pair[::-1]
            raise ctx.fail(
                key,
                f"{present} is set but {absent} is empty; set both, or neither to use the environment's credentials",
            )
        return {"access_key_id": access, "secret_access_key": secret}
    access, secret = ctx.env.get("access_key_id"), ctx.env.get("secret_access_key")
    if bool(access[0]) != bool(secret[0]):
        present, absent = (ACCESS_KEY_VARS, SECRET_KEY_VARS) if access[0] else (SECRET_KEY_VARS, ACCESS_KEY_VARS)
        raise ctx.fail(key, f"{present[0]} is set but {absent[0]} is not; set both in the environment, or neither")
    return {"access_key_id": access, "secret_access_key": secret, "session_token": ctx.env.get("session_token")}

# ------------------------------------------------------------------------------------ small


def _pick(*candidates: tuple[Any, str]) -> tuple[Any, str]:
    """The first ``(value, origin)`` whose value is not None; ``(None, "")`` when none is."""
    return next(((value, origin) for value, origin in candidates if value is not None), (None, ""))


def _absolute(path: str, cwd: Path) -> str:
    """``path`` with ``~`` expanded, made absolute against ``cwd`` and cleaned."""
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))
