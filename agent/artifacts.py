"""Fetching artifacts named in a job spec, verified by sha256 before use.

- ``file://`` URIs (embedded mode, shared disks, bundles) are verified in place, and only
  under the agent's file roots (``--file-root``, ``$FLEETBENCH_AGENT_FILE_ROOTS``; default: the
  controller's artifact store on this machine), so a job cannot make the agent read, hash and
  report on any other local file.
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
from protocol.errors import ErrorKind
from protocol.hashing import sha256_file

CACHE_ENV = "FLEETBENCH_AGENT_CACHE"
CACHE_MAX_ENV = "FLEETBENCH_AGENT_CACHE_MAX_MB"
TOKEN_ENV = "FLEETBENCH_AGENT_TOKEN"
#: Folders file:// artifacts may be read from, os.pathsep-separated (set: these only; unset: the default).
FILE_ROOTS_ENV = "FLEETBENCH_AGENT_FILE_ROOTS"
DEFAULT_CACHE_MAX_MB = 4096
#: Download attempts for one artifact whose bytes do not match its sha256.
FETCH_ATTEMPTS = 2
CHUNK = 1 << 20


def _name(ref: ArtifactRef) -> str:
    return ref.filename or ref.sha256[:12]


def default_file_roots() -> list[Path]:
    """The controller's artifact store on this machine, by the controller's own rule
    (``$FLEETBENCH_HOME``, else ``$XDG_DATA_HOME/fleetbench``, else ``~/.local/share/fleetbench``)."""
    if os.environ.get("FLEETBENCH_HOME"):
        home = Path(os.environ["FLEETBENCH_HOME"]).expanduser()
    else:
        home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser() / "fleetbench"
    return [home / "artifacts"]


def file_roots() -> list[Path]:
    """The folders this agent reads file:// artifacts from: $FLEETBENCH_AGENT_FILE_ROOTS if set, else the default."""
    raw = os.environ.get(FILE_ROOTS_ENV)
    if raw is None:
        return default_file_roots()
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _under(path: Path, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(path))  # symlinks and .. resolved: no way out of a root
    for root in roots:
        top = Path(os.path.realpath(root))
        if real == top or top in real.parents:
            return True
    return False


class ArtifactCache:
    """Downloaded artifacts, one file per sha256, least recently used evicted past ``max_bytes``."""

    def __init__(self, root: Path | str | None = None, max_bytes: int | None = None, token: str | None = None,
                 roots: list[Path | str] | None = None):  # fmt: skip
        default_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleetbench-agent"
        self.root = Path(root or os.environ.get(CACHE_ENV) or default_root)
        mb = int(os.environ.get(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_MB))
        self.max_bytes = max_bytes if max_bytes is not None else mb * 2**20
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        #: where file:// artifacts may be read (see file_roots())
        self.file_roots = [Path(r) for r in roots] if roots is not None else file_roots()
        #: how many downloads this cache made (tests read it)
        self.downloads = 0

    def path(self, ref: ArtifactRef) -> Path:
        """A verified local file for ``ref``; raises JobError (never returns an unverified file)."""
        parsed = urlparse(ref.uri)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
            if parsed.netloc not in ("", "localhost") or not _under(path, self.file_roots):
                # said before the file is touched: whether it exists, its size or hash stay unknown to the job
                where = ", ".join(str(r) for r in self.file_roots) or "none"
                raise JobError(
                    ErrorKind.BAD_ARTIFACT,
                    f"artifact {_name(ref)}: {ref.uri} is outside this agent's file roots ({where}); it was not read. "
                    f"Add its folder with --file-root (env {FILE_ROOTS_ENV}, agent config `file_roots`) "
                    "or let agents fetch artifacts over HTTP (--artifact-url)",
                )
            return _verified_in_place(ref, path)
        if parsed.scheme not in ("http", "https"):
            raise JobError(
                ErrorKind.BAD_ARTIFACT,
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
            ErrorKind.BAD_ARTIFACT,
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
            raise JobError(ErrorKind.BAD_ARTIFACT, f"could not fetch artifact {_name(ref)} from {_redact(ref.uri)}: HTTP {exc.code}; {hint}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise JobError(
                ErrorKind.FETCH_FAILED,
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
            ErrorKind.BAD_ARTIFACT,
            f"artifact {_name(ref)} is missing at {path}; "
            "the controller's artifact store was moved or cleaned: run the conversion again",
        )
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise JobError(
            ErrorKind.BAD_ARTIFACT,
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
