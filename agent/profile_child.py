"""The profile phase's own process: ``python -m agent.profile_child REQUEST.json``.

It loads the variant again (the same runtime, device and settings), binds the latency phase's inputs, and
profiles it (:meth:`agent.backends.base.Backend.profile`), printing one JSON line: ``{"ok": true, "profile":
...}`` or ``{"ok": false, "why": ...}``. The benchmark child waits for it within what is left of the job's
timeout. A second compile that runs out of memory, a native crash or a hang here costs the profile, never
the job's record, and the profile's memory is no part of the job's peak.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def run(request: dict) -> dict:
    import numpy as np

    from agent import backends
    from agent.errors import JobError
    from protocol import BenchmarkSettings

    start = time.monotonic()
    try:
        backend = backends.create(request["runtime"])
        backend.load(request["model"], request["device"], BenchmarkSettings.from_dict(request["settings"]),
                     f32=request["f32"])  # fmt: skip
        with np.load(request["inputs"]) as data:
            backend.prepare([data[f"in_{i}"] for i in range(request["n_inputs"])])
        left = float(request["timeout_s"]) - (time.monotonic() - start)
        profile = backend.profile(int(request["runs"]), max(left - 1.0, 0.0))
    except JobError as exc:
        return {"ok": False, "why": exc.message}
    except backends.Unavailable as exc:
        return {"ok": False, "why": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the runtime's own error, in one line
        return {"ok": False, "why": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    return {"ok": True, "profile": profile.to_dict()}


def main(argv: list[str]) -> int:
    result = run(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # skip the runtimes' teardown: the answer is written
