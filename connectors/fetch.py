"""Fetch http(s) URLs with a timeout, a size limit and redirects; dead links become SourceErrors."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ragglm.errors import SourceError

__all__ = ["Fetched", "fetch_url", "is_url"]

USER_AGENT = "ragglm/0.1 (+document indexer)"
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass
class Fetched:
    url: str  # as asked
    final_url: str  # after redirects
    content_type: str
    data: bytes


def is_url(source: str | object) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def fetch_url(url: str, timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Fetched:
    """The body of url; the whole download must finish within timeout seconds ($RAGGLM_FETCH_TIMEOUT
    or 20 when None)."""
    if timeout is None:
        timeout = float(os.environ.get("RAGGLM_FETCH_TIMEOUT", DEFAULT_TIMEOUT_S))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(url, max_bytes)
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise _timed_out(url, timeout)
                chunk = response.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(url, max_bytes)
                chunks.append(chunk)
            return Fetched(url, response.geturl(), response.headers.get("Content-Type", ""), b"".join(chunks))
    except SourceError:
        raise
    except urllib.error.HTTPError as exc:
        dead = exc.code in (404, 410)
        raise SourceError(url, f"HTTP {exc.code} {exc.reason}" + (": dead link" if dead else ""),
                          "check the address" if dead else "try again later or check access rights") from exc
    except TimeoutError as exc:
        raise _timed_out(url, timeout) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _timed_out(url, timeout) from exc
        raise SourceError(url, f"could not connect ({exc.reason})", "check the address and the network") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(url, f"could not be fetched ({exc})", "check the address and the network") from exc


def _timed_out(url: str, timeout: float) -> SourceError:
    return SourceError(url, f"no complete response within {timeout:g} s (timed out)",
                       "check that the server is up, or raise the timeout")


def _too_large(url: str, max_bytes: int) -> SourceError:
    limit = f"{max_bytes / 2**20:g} MiB" if max_bytes >= 2**20 else f"{max_bytes / 1024:g} KiB"
    return SourceError(url, f"larger than the {limit} limit",
                       "download the file and index the local copy")
