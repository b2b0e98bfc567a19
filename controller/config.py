"""Where fleetbench keeps its data, and which database it uses.

Data directory, first match wins:
1. ``--data-dir`` on the command line;
2. ``$FLEETBENCH_HOME``;
3. ``$XDG_DATA_HOME/fleetbench``, else ``~/.local/share/fleetbench``.

Database: ``--db`` or ``$FLEETBENCH_DB_URL``; default SQLite at
``<data dir>/fleetbench.db``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


#: How often `fleetbench serve` stores the live agents' inventories (their heartbeats), for the dashboard.
FLEET_RECORD_S = 10.0


def default_data_dir() -> Path:
    if os.environ.get("FLEETBENCH_HOME"):
        return Path(os.environ["FLEETBENCH_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "fleetbench"


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def resolve(cls, data_dir: str | Path | None) -> "Paths":
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        root = root.resolve()
        try:
            for sub in ("artifacts", "logs", "run", "demo"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from controller.errors import DataDirError

            raise DataDirError(f"cannot use {root} as the data directory ({exc.strerror or exc}); "
                               "give a folder fleetbench may write with --data-dir or FLEETBENCH_HOME") from None  # fmt: skip
        return cls(root)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    def db_url(self, override: str | None = None) -> str:
        url = override or os.environ.get("FLEETBENCH_DB_URL")
        return url or f"sqlite:///{self.root / 'fleetbench.db'}"
