"""Fetching artifacts named in a job spec, verified by sha256 before use.

- ``file://`` URIs (embedded mode, shared disks, bundles) are verified in place.
- ``http(s)://`` URIs (the controller's artifact API) are downloaded into a
  bounded local cache named by sha256, with the agent's token
  (``$FLEETBENCH_AGENT_TOKEN``) as a bearer token. A cached copy is verified
  again before every use; one that no longer matches is deleted and fetched
  again. A download that does not match is fetched again once; if it still
  does not match, the job fails and the file is never run.

Standard library only, so a bare device needs nothing extra.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from agent.errors import JobError
from protocol import ArtifactRef
from protocol.hashing import sha256_file

CACHE_ENV = "FLEETBENCH_AGENT_CACHE"
CACHE_MAX_ENV = "FLEETBENCH_AGENT_CACHE_MAX_MB"
TOKEN_ENV = "FLEETBENCH_AGENT_TOKEN"
DEFAULT_CACHE_MAX_MB = 4096
#: Download attempts for one artifact whose bytes do not match its sha256.
FETCH_ATTEMPTS = 2
CHUNK = 1 << 20


def _name(ref: ArtifactRef) -> str:
    return ref.filename or ref.sha256[:12]


class ArtifactCache:
    """Downloaded artifacts, one file per sha256, least recently used evicted past ``max_bytes``."""

    def __init__(self, root: Path | str | None = None, max_bytes: int | None = None, token: str | None = None):
        default_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleetbench-agent"
        self.root = Path(root or os.environ.get(CACHE_ENV) or default_root)
        mb = int(os.environ.get(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_MB))
        self.max_bytes = max_bytes if max_bytes is not None else mb * 2**20
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        #: how many downloads this cache made (tests read it)
        self.downloads = 0

    def path(self, ref: ArtifactRef) -> Path:
        """A verified local file for ``ref``; raises JobError (never returns an unverified file)."""
        parsed = urlparse(ref.uri)
        if parsed.scheme == "file":
            return _verified_in_place(ref, Path(unquote(parsed.path)))
        if parsed.scheme not in ("http", "https"):
            raise JobError(
                "bad-artifact",
                f"artifact {_name(ref)} has URI scheme '{parsed.scheme}'; this agent fetches file://, http:// and https://",
            )
        cached = self.root / ref.sha256
        if cached.is_file():
            if sha256_file(cached) == ref.sha256:
                os.utime(cached)  # most recently used
                return cached
            cached.unlink()  # changed on disk since it was fetched: fetch it again
        for _ in range(FETCH_ATTEMPTS):
            actual = self._download(ref, cached)
            if actual == ref.sha256:
                self._evict(keep=cached)
                return cached
            cached.unlink(missing_ok=True)
        raise JobError(
            "bad-artifact",
            f"artifact {_name(ref)} from {_redact(ref.uri)} has sha256 {actual[:12]}…, the job expects "
            f"{ref.sha256[:12]}…, in {FETCH_ATTEMPTS} downloads; it was not run. The controller's copy is damaged: "
            "run `fleetbench artifacts verify` there, and convert again",
        )

    def _download(self, ref: ArtifactRef, dest: Path) -> str:
        import hashlib

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        request = urllib.request.Request(ref.uri, headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            hint = {
                401: f"the controller wants a token: set {TOKEN_ENV} (agent config `token`)",
                403: f"the controller refused this agent's token: check {TOKEN_ENV} (agent config `token`)",
                404: "the controller no longer has it: convert the model again",
            }.get(exc.code, "try again later")
            raise JobError("bad-artifact", f"could not fetch artifact {_name(ref)} from {_redact(ref.uri)}: HTTP {exc.code}; {hint}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise JobError(
                "fetch-failed",
                f"could not fetch artifact {_name(ref)} from {_redact(ref.uri)}: {reason}; "
                "check that the controller is up and reachable from this device",
            ) from None
        self.downloads += 1
        os.replace(tmp, dest)
        return digest.hexdigest()

    def _evict(self, keep: Path) -> None:
        files = [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        for p in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            total -= p.stat().st_size
            p.unlink(missing_ok=True)


def _redact(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


def _verified_in_place(ref: ArtifactRef, path: Path) -> Path:
    if not path.is_file():
        raise JobError(
            "bad-artifact",
            f"artifact {_name(ref)} is missing at {path}; "
            "the controller's artifact store was moved or cleaned: run the conversion again",
        )
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise JobError(
            "bad-artifact",
            f"artifact {path} has sha256 {actual[:12]}…, the job expects {ref.sha256[:12]}…; "
            "the file was changed or corrupted after conversion, so it was not run. "
            "Run the conversion again (or `fleetbench demo --rebuild` for the demo)",
        )
    return path


_default: ArtifactCache | None = None


def local_path(ref: ArtifactRef) -> Path:
    """Resolve ``ref`` to a verified local file through this process's cache."""
    global _default
    if _default is None:
        _default = ArtifactCache()
    return _default.path(ref)
