"""Row sources: dataset files named by URL, read into a list of row dicts.

Accepted ``files_url`` forms:

- ``hf://datasets/<namespace>/<repo>[@<revision>][/<path>]``: a dataset repository on a Hugging Face
  Hub compatible endpoint (the Hub itself or a NeMo Data Store), through ``huggingface_hub``. The
  endpoint is the dataset's own ``hf_endpoint``, else ``settings.hf_endpoint``, else the Hub. ``path``
  may name a file, a folder, or be left out: a folder or a repository means every data file in it
  (sorted by path, read one after the other). Downloads are kept in the Hugging Face cache layout under
  ``<data_dir>/huggingface``; a file already there is used when the endpoint cannot be reached.
  ``?split=<split>`` keeps the files of that split (``train.jsonl``, ``data/test-00000-of-00001.parquet``,
  ``test/...``), ``?name=<config>`` those whose path names that configuration (ignored when none
  does: single-configuration repositories do not name it), ``?revision=<rev>`` is ``@<rev>``.
- ``huggingface://datasets/<namespace>/<repo>?split=<split>[&name=<config>][&revision=<rev>]`` (the
  Llama Stack form) and ``nds:<namespace>/<repo>/<file>`` (the legacy NeMo Data Store form): the same
  as ``hf://datasets/...``.
- ``data:<media type>[;base64],<data>`` URLs holding a whole file, base64 or percent-encoded, at most
  :data:`DATA_URL_MAX_CHARS` long (Llama Stack clients send these). The media type names the format
  (``text/csv``, ``application/jsonl``, ...); ``text/plain``, another ``text/*`` type or none leaves
  it to the content.
- ``http(s)://...``: one file, downloaded with httpx.
- ``file:///abs/path``, ``file://relative/path`` and plain paths: local files or folders, which must lie
  under one of ``settings.data_roots`` once symlinks are resolved. A relative path is looked up under
  each root in turn.

:func:`check_dataset_uri` tells which of these kinds a URL is, checking it without reading it; it is
the one place that knows the forms, for ``load_rows`` and for whoever takes a URL to read later.

File formats, by extension (``.gz`` compressed files too) or else by content: a JSON array of objects
(or a JSON object holding such an array under ``data`` or ``rows``), JSON Lines, CSV (TSV for
``.tsv``), and Parquet. ``limit`` stops reading after that many rows.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import io
import itertools
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlparse

from evalstack.egress import OPEN_POLICY, EgressPolicy, EgressRefusedError
from evalstack.errors import InvalidInputError, NotFoundError, UpstreamError

if TYPE_CHECKING:
    from evalstack.config import Settings

logger = logging.getLogger(__name__)

DATA_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")

DatasetUriKind = Literal["local", "http", "hub", "data"]
URI_FORMS: dict[DatasetUriKind, str] = {
    "hub": (
        "hf://datasets/<namespace>/<repo>[/<path>], huggingface://datasets/<namespace>/<repo>?split=<split> "
        "or nds:<namespace>/<repo>/<file>"
    ),
    "http": "http(s):// URLs of a JSON, JSONL, CSV or Parquet file",
    "data": "data: URLs holding a whole file",
    "local": "file:// URLs and local paths inside the server's data_roots",
}
"""The dataset URL forms by kind, as error messages name them."""
ALL_URI_KINDS: tuple[DatasetUriKind, ...] = ("hub", "http", "data", "local")
_HF_QUERY_KEYS = ("split", "name", "revision")
_HF_URL = re.compile(
    r"^(?:hf|huggingface)://datasets/(?P<ns>[^/@?]+)/(?P<repo>[^/@?]+)(?:@(?P<rev>[^/?]+))?"
    r"(?:/(?P<path>[^?]*))?(?:\?(?P<query>.*))?$"
)
_HTTP_TIMEOUT = 60.0

DATA_URL_MAX_CHARS = 16 * 2**20
"""The longest ``data:`` URL read as a dataset (16 MiB, about 12 MiB of base64-encoded file).

A ``data:`` URL is kept whole in the dataset's registration, so larger files belong in a file or at a URL.
"""


@dataclass(frozen=True)
class HfLocation:
    """A place in a Hub dataset repository: ``path`` is a file, a folder or ``""`` (the whole repo)."""

    repo_id: str
    revision: str
    path: str
    split: str | None = None
    config: str | None = None

    @property
    def url(self) -> str:
        rev = "" if self.revision == "main" else f"@{self.revision}"
        query = "&".join(f"{k}={v}" for k, v in (("name", self.config), ("split", self.split)) if v)
        return (
            f"hf://datasets/{self.repo_id}{rev}"
            + (f"/{self.path}" if self.path else "")
            + (f"?{query}" if query else "")
        )


def parse_hf_url(url: str) -> HfLocation:
    """Parse ``hf://datasets/...``, ``huggingface://datasets/...`` and ``nds:...`` URLs; InvalidInputError for
    anything else, or for a query key other than split, name and revision."""
    if url.startswith("nds:"):
        rest = url[len("nds:") :].lstrip("/")
        url = f"hf://datasets/{rest}"
    match = _HF_URL.match(url)
    if match is None:
        raise InvalidInputError(
            f"Dataset URL {url!r} is not a Hub dataset URL; expected "
            "hf://datasets/<namespace>/<repo>[/<path>], "
            "huggingface://datasets/<namespace>/<repo>?split=<split> or nds:<namespace>/<repo>/<file>."
        )
    path = unquote(match.group("path") or "").strip("/")
    query = {key: values[-1] for key, values in parse_qs(match.group("query") or "").items()}
    unknown = sorted(set(query) - set(_HF_QUERY_KEYS))
    if unknown:
        raise InvalidInputError(
            f"Dataset URL {url!r} has unsupported parameters {', '.join(unknown)}; "
            f"accepted: {', '.join(_HF_QUERY_KEYS)}."
        )
    revision = match.group("rev") or query.get("revision") or "main"
    return HfLocation(
        f"{match.group('ns')}/{match.group('repo')}", revision, path, query.get("split"), query.get("name")
    )


def choose_hf_files(files: list[str], split: str | None = None, name: str | None = None) -> list[str]:
    """The data files among ``files`` (paths in a Hub repository) that hold ``split`` of config ``name``.

    A split or config name matches a whole component of the path, as in
    ``data/test-00000-of-00001.parquet`` or ``main/test.jsonl``. A config name that matches no file is
    ignored (single-config repositories do not name it).
    """
    data = sorted(f for f in files if _is_data_file(f.rsplit("/", 1)[-1]))

    def has_token(file: str, token: str) -> bool:
        return re.search(rf"(^|[/_.\-]){re.escape(token.lower())}([/_.\-]|$)", file.lower()) is not None

    if name:
        data = [f for f in data if has_token(f, name)] or data
    if split:
        data = [f for f in data if has_token(f, split)]
    return data


def check_dataset_uri(
    uri: str, *, kinds: Sequence[DatasetUriKind] = ALL_URI_KINDS, settings: Settings | None = None
) -> DatasetUriKind:
    """Which kind of source ``uri`` names, checked without reading it.

    InvalidInputError, naming the forms of ``kinds``, for an empty URL, another scheme or a kind not in
    ``kinds``; InvalidInputError for a Hub URL that does not parse. Given ``settings``, a local path
    must also lie inside the data roots (InvalidInputError) and exist (NotFoundError).
    """
    url = uri.strip()
    accepted = "; ".join(URI_FORMS[k] for k in kinds)
    kind: DatasetUriKind
    if not url:
        raise InvalidInputError(f"A dataset needs a URL; accepted: {accepted}.")
    scheme = urlparse(url).scheme.lower()
    if url.startswith(("hf://", "huggingface://", "nds:")):
        kind = "hub"
    elif url.startswith("data:"):
        kind = "data"
    elif scheme in ("http", "https"):
        kind = "http"
    elif scheme in ("", "file") or _looks_like_windows_drive(url):
        kind = "local"
    else:
        raise InvalidInputError(
            f"Dataset URL {url!r} has an unsupported scheme {scheme!r}; accepted: {accepted}."
        )
    if kind not in kinds:
        raise InvalidInputError(f"Dataset URL {url!r} is not accepted here; accepted: {accepted}.")
    if kind == "hub":
        parse_hf_url(url)
    elif kind == "local" and settings is not None:
        _resolve_local(url, settings)
    return kind


async def load_rows(
    files_url: str,
    *,
    settings: Settings,
    limit: int | None = None,
    hf_endpoint: str | None = None,
    hf_token: str | None = None,
) -> list[dict[str, Any]]:
    """Read the rows of the dataset file(s) at ``files_url`` (see the module docstring).

    Raises InvalidInputError for an unsupported URL, a path outside the data roots or a malformed
    file; NotFoundError for a missing file (naming where it looked); UpstreamError when a remote
    endpoint fails.
    """
    if limit is not None and limit <= 0:
        return []
    url = files_url.strip()
    kind = check_dataset_uri(url)
    if kind == "hub":
        location = parse_hf_url(url)
        endpoint = hf_endpoint or settings.hf_endpoint
        policy = OPEN_POLICY
        if endpoint:  # a custom endpoint obeys the egress policy like any download, on every connection
            policy = settings.egress.policy()
            await policy.check_url(endpoint, "download")
        cache_dir = Path(settings.data_dir) / "huggingface"
        paths = await asyncio.to_thread(_hf_fetch, location, cache_dir, endpoint, hf_token, policy)
        return await asyncio.to_thread(_read_paths, paths, limit)
    if kind == "data":
        return await asyncio.to_thread(_read_data_url, url, limit)
    if kind == "http":
        return await _load_http(url, limit, settings.egress.policy())
    path = _resolve_local(url, settings)
    return await asyncio.to_thread(_read_local, path, limit)


# ---------------------------------------------------------------------------------------------- local


def _looks_like_windows_drive(url: str) -> bool:
    return len(url) > 2 and url[1] == ":" and url[0].isalpha() and url[2] in "/\\"


def _local_path_of(url: str) -> Path:
    if not url.startswith("file:"):
        return Path(url).expanduser()
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if parsed.netloc in ("", "localhost"):
        return Path(path)
    # file://relative/path: the host part is the first path segment of a relative path.
    return Path(unquote(parsed.netloc) + path)


def _resolve_local(url: str, settings: Settings) -> Path:
    """The resolved local path for ``url``, confined to the data roots."""
    roots = [Path(r).expanduser().resolve() for r in settings.data_roots]
    shown_roots = ", ".join(str(r) for r in roots) or "(none configured)"
    raw = _local_path_of(url)
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    outside: Path | None = None
    for candidate in candidates:
        resolved = candidate.resolve()
        inside = any(resolved.is_relative_to(root) for root in roots)
        if not inside:
            outside = outside or resolved
            continue
        try:
            if resolved.exists():
                return resolved
        except OSError as exc:  # a name longer than the file system allows, say
            raise InvalidInputError(
                f"Dataset path {url!r} is not a usable file name ({exc.strerror}); name a data file "
                f"under the data roots ({shown_roots})."
            ) from exc
    if outside is not None:
        raise InvalidInputError(
            f"Dataset path {url!r} lies outside the allowed data roots ({shown_roots}); "
            "put the file under one of them or add its folder to data_roots in the settings."
        )
    looked = ", ".join(str(c) for c in candidates)
    raise NotFoundError(f"Dataset file {url!r} not found; looked at: {looked}.")


def _read_local(path: Path, limit: int | None) -> list[dict[str, Any]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_data_file(p.name))
        if not files:
            raise NotFoundError(
                f"Dataset folder {str(path)!r} holds no data files "
                f"({', '.join(DATA_EXTENSIONS)}, optionally .gz)."
            )
        return _read_paths(files, limit)
    return _read_paths([path], limit)


# ----------------------------------------------------------------------------------------------- http


async def _load_http(url: str, limit: int | None, egress: EgressPolicy) -> list[dict[str, Any]]:
    """Download one file; the egress policy checks every connection, redirects included."""
    import httpx

    from evalstack.egress_clients import download_client

    await egress.check_url(url, "download")  # a refusal that names the URL, before any connection
    try:
        async with download_client(egress, timeout=_HTTP_TIMEOUT) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"Could not download dataset {url!r}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 404:
        raise NotFoundError(f"Dataset file {url!r} not found (HTTP 404).")
    if response.status_code >= 400:
        raise UpstreamError(f"Downloading dataset {url!r} failed with HTTP {response.status_code}.")
    name = urlparse(url).path.rsplit("/", 1)[-1]
    fmt = _format_of(name) or _format_of_content_type(response.headers.get("content-type", ""))
    content = response.content
    return await asyncio.to_thread(
        _read_stream, io.BytesIO(content), url, fmt, name.lower().endswith(".gz"), limit
    )


def _read_data_url(url: str, limit: int | None) -> list[dict[str, Any]]:
    if len(url) > DATA_URL_MAX_CHARS:
        raise InvalidInputError(
            f"A data: URL dataset may be at most {DATA_URL_MAX_CHARS // 2**20} MiB; this one is "
            f"{len(url) / 2**20:.1f} MiB. Register a larger dataset by a path or file:// URL under the "
            "server's data_roots, or by an http(s):// or hf:// URL."
        )
    header, sep, payload = url[len("data:") :].partition(",")
    if not sep:
        raise InvalidInputError(
            "A data: URL needs a comma between its media type and its data: "
            "'data:text/csv;base64,<base64 data>' or 'data:text/csv,<percent-encoded data>'."
        )
    parts = [part.strip() for part in header.split(";")]
    media_type = parts[0].lower()
    if "base64" in parts[1:]:
        try:
            # Line breaks and spaces (wrapped base64) are not data.
            data = base64.b64decode("".join(unquote(payload).split()), validate=True)
        except ValueError as exc:  # binascii.Error
            raise InvalidInputError(
                f"The data: URL says base64 but its data is not valid base64: {exc}."
            ) from exc
    else:
        data = unquote_to_bytes(payload)
    fmt = _format_of_content_type(media_type)
    if fmt is None and not _sniffable_media_type(media_type):
        raise InvalidInputError(
            f"data: URL of type {parts[0]!r} is not a supported dataset format; accepted: "
            "text/csv, text/tab-separated-values, application/json, application/jsonl (JSON Lines, also "
            "application/x-ndjson), application/vnd.apache.parquet, or text/plain and no type to detect it."
        )
    return _read_stream(io.BytesIO(data), "data: URL", fmt, False, limit)


def _sniffable_media_type(media_type: str) -> bool:
    """Whether a data: URL's media type leaves its format to be detected from the content.

    No type, any ``text/*`` type, ``application/octet-stream``, and ``None`` (what Llama Stack's
    tests send when Python's ``mimetypes`` does not know a file's extension, e.g. ``.jsonl``).
    """
    return media_type in ("", "none", "application/octet-stream") or media_type.startswith("text/")


def _format_of_content_type(content_type: str) -> str | None:
    ct = content_type.split(";")[0].strip().lower()
    return {
        "application/json": "json",
        "application/jsonl": "jsonl",
        "application/x-ndjson": "jsonl",
        "application/jsonlines": "jsonl",
        "text/csv": "csv",
        "text/tab-separated-values": "tsv",
        "application/vnd.apache.parquet": "parquet",
        "application/x-parquet": "parquet",
    }.get(ct)


# ------------------------------------------------------------------------------------------------ hub


def _is_data_file(name: str) -> bool:
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    return lower.endswith(DATA_EXTENSIONS) and not name.startswith(".")


def _silent_tqdm() -> Any:
    from tqdm.auto import tqdm

    class _Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


def _hf_fetch(
    location: HfLocation, cache_dir: Path, endpoint: str | None, token: str | None, egress: EgressPolicy
) -> list[Path]:
    """Download (or find in the cache) the data files at ``location``; runs in a worker thread.

    Every connection huggingface_hub opens for it (redirects included) must pass ``egress``.
    """
    from evalstack.egress_clients import hub_egress

    with hub_egress(egress):
        try:
            return _hf_fetch_files(location, cache_dir, endpoint, token)
        except Exception as exc:
            refusal = _egress_refusal_in(exc)
            if refusal is not None and refusal is not exc:
                raise refusal from exc
            raise


def _egress_refusal_in(exc: BaseException) -> EgressRefusedError | None:
    """The egress refusal ``exc`` was raised for, however huggingface_hub wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, EgressRefusedError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _hf_fetch_files(
    location: HfLocation, cache_dir: Path, endpoint: str | None, token: str | None
) -> list[Path]:
    from huggingface_hub import errors as hf_errors

    shown_endpoint = endpoint or "the Hugging Face Hub"
    try:
        if location.path and _is_data_file(location.path.rsplit("/", 1)[-1]):
            files = [location.path]
        else:
            files = _hf_list(location, cache_dir, endpoint, token)
            if not files:
                where = f"folder {location.path!r} of " if location.path else ""
                which = "".join(
                    f" for {k} {v!r}"
                    for k, v in (("configuration", location.config), ("split", location.split))
                    if v
                )
                raise NotFoundError(
                    f"No data files ({', '.join(DATA_EXTENSIONS)}){which} in {where}dataset repository "
                    f"{location.repo_id!r} (revision {location.revision}) at {shown_endpoint}."
                )
        return [_hf_download(location, name, cache_dir, endpoint, token) for name in files]
    except hf_errors.GatedRepoError as exc:
        raise UpstreamError(
            f"Access to dataset repository {location.repo_id!r} at {shown_endpoint} was refused; "
            "pass an hf_token with access to it."
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise NotFoundError(
            f"Dataset repository {location.repo_id!r} not found at {shown_endpoint} (for {location.url})."
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise NotFoundError(
            f"Revision {location.revision!r} of dataset repository {location.repo_id!r} not found "
            f"at {shown_endpoint}."
        ) from exc
    except hf_errors.LocalEntryNotFoundError as exc:
        raise UpstreamError(
            f"Could not reach {shown_endpoint} to download {location.url}, and it is not in the cache "
            f"({cache_dir}): {exc}"
        ) from exc
    except hf_errors.EntryNotFoundError as exc:
        raise NotFoundError(
            f"File {location.path!r} not found in dataset repository {location.repo_id!r} "
            f"(revision {location.revision}) at {shown_endpoint}."
        ) from exc
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise UpstreamError(f"{shown_endpoint} answered HTTP {status} for {location.url}: {exc}") from exc
    except (NotFoundError, UpstreamError, InvalidInputError):
        raise
    except Exception as exc:  # network failures: connection refused, timeouts, broken responses
        raise UpstreamError(f"Could not download {location.url} from {shown_endpoint}: {exc}") from exc


def _hf_download(
    location: HfLocation, filename: str, cache_dir: Path, endpoint: str | None, token: str | None
) -> Path:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        location.repo_id,
        filename,
        repo_type="dataset",
        revision=location.revision,
        cache_dir=cache_dir,
        endpoint=endpoint,
        token=token,
        tqdm_class=_silent_tqdm(),
    )
    logger.debug("hf dataset file %s/%s at %s", location.repo_id, filename, path)
    return Path(str(path))


def _hf_list(location: HfLocation, cache_dir: Path, endpoint: str | None, token: str | None) -> list[str]:
    """Data files under ``location.path``: from the tree API, else the repo info, else the cache."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token)
    prefix = f"{location.path}/" if location.path else ""
    try:
        try:
            entries = api.list_repo_tree(
                location.repo_id,
                path_in_repo=location.path or None,
                recursive=True,
                repo_type="dataset",
                revision=location.revision,
            )
            names = [e.path for e in entries if isinstance(e, RepoFile)]
        except hf_errors.HfHubHTTPError as exc:
            if isinstance(exc, hf_errors.RepositoryNotFoundError | hf_errors.RevisionNotFoundError):
                raise
            status = exc.response.status_code if exc.response is not None else None
            if status not in (404, 405, 501):
                raise
            # An endpoint without the tree API: the repository info lists every file.
            info = api.dataset_info(location.repo_id, revision=location.revision)
            names = [s.rfilename for s in info.siblings or [] if s.rfilename.startswith(prefix)]
    except (hf_errors.HfHubHTTPError, ValueError):
        raise
    except Exception as exc:
        cached = _hf_cached_files(location, cache_dir)
        if cached is None:
            raise
        logger.warning("Cannot list %s (%s); using the cached copy", location.url, exc)
        names = cached
    return choose_hf_files([n for n in names if n.startswith(prefix)], location.split, location.config)


def _hf_cached_files(location: HfLocation, cache_dir: Path) -> list[str] | None:
    """Files of ``location`` in the local Hub cache, or None when that revision was never cached."""
    repo_dir = cache_dir / ("datasets--" + location.repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / location.revision
    commit = ref.read_text().strip() if ref.is_file() else location.revision
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]


# -------------------------------------------------------------------------------------------- formats


def _format_of(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    for ext, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".parquet", "parquet"),
    ):
        if lower.endswith(ext):
            return fmt
    return None


def _read_paths(paths: list[Path], limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        remaining = None if limit is None else limit - len(rows)
        if remaining is not None and remaining <= 0:
            break
        try:
            with path.open("rb") as handle:
                rows.extend(
                    _read_stream(
                        handle, str(path), _format_of(path.name), path.name.lower().endswith(".gz"), remaining
                    )
                )
        except FileNotFoundError as exc:
            raise NotFoundError(f"Dataset file {str(path)!r} not found.") from exc
    return rows


def _read_stream(
    raw: IO[bytes], where: str, fmt: str | None, compressed: bool, limit: int | None
) -> list[dict[str, Any]]:
    stream: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if compressed else raw
    if fmt is None:
        data = stream.read()
        fmt = _sniff(data[:4096])
        stream = io.BytesIO(data)
    try:
        if fmt == "parquet":
            return _read_parquet(stream, where, limit)
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        if fmt == "json":
            return _read_json(text.read(), where, limit)
        if fmt == "jsonl":
            return _take(_iter_jsonl(text, where), limit)
        return _take(_iter_csv(text, "\t" if fmt == "tsv" else ","), limit)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"Dataset file {where!r} is not UTF-8 text ({fmt}): {exc}") from exc
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise InvalidInputError(f"Dataset file {where!r} is not readable CSV: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"Dataset file {where!r} could not be read: {exc}") from exc


def _sniff(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "csv"


def _take(rows: Iterator[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` rows (all without one), reading no row past them."""
    return list(rows if limit is None else itertools.islice(rows, limit))


def _as_rows(values: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(values, dict):
        for key in ("data", "rows"):
            if isinstance(values.get(key), list):
                values = values[key]
                break
        else:
            values = [values]
    if not isinstance(values, list):
        raise InvalidInputError(
            f"Dataset file {where!r} holds JSON {type(values).__name__}; expected an array of objects, "
            "an object with an array under 'data' or 'rows', or JSON Lines."
        )
    for n, row in enumerate(values):
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"Dataset file {where!r}: row {n} is JSON {type(row).__name__}, not an object."
            )
    return values


def _read_json(text: str, where: str, limit: int | None) -> list[dict[str, Any]]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json
            return _take(_iter_jsonl(io.StringIO(text), where), limit)
        raise InvalidInputError(
            f"Dataset file {where!r} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc
    rows = _as_rows(values, where)
    return rows if limit is None else rows[:limit]


def _iter_jsonl(text: IO[str], where: str) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(text, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"Dataset file {where!r}: line {lineno} is not valid JSON: {exc.msg}."
            ) from exc
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"Dataset file {where!r}: line {lineno} is JSON {type(row).__name__}, not an object."
            )
        yield row


def _iter_csv(text: IO[str], delimiter: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(text, delimiter=delimiter)
    for row in reader:
        yield {k: v for k, v in row.items() if k is not None}


def _plain(value: Any) -> Any:
    """Parquet values made JSON-friendly (timestamps, decimals and bytes become text)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_parquet(stream: IO[bytes], where: str, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = stream if stream.seekable() else io.BytesIO(stream.read())
        parquet = pq.ParquetFile(source)
        rows: list[dict[str, Any]] = []
        for batch in parquet.iter_batches(batch_size=4096):
            rows.extend(_plain(row) for row in batch.to_pylist())
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
        return rows
    except pa.ArrowException as exc:
        raise InvalidInputError(f"Dataset file {where!r} is not a readable Parquet file: {exc}") from exc
