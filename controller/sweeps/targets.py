"""Selectors to targets: which capability (and pinned agent) each variant runs on."""

from __future__ import annotations

import fnmatch

from controller.convert.variants import FAMILY_RUNTIMES, VARIANTS
from controller.sweeps.spec import SweepError
from protocol.machines import split_selector



def _compatible(variant: str, capability: str) -> bool:
    return capability.split(":", 1)[0] in FAMILY_RUNTIMES[VARIANTS[variant].family]


def expand_targets(devices: list[str], variants: list[str], known: dict[str, set[str]]) -> dict[str, list[tuple[str, str | None]]]:
    """{variant: [(capability, pinned agent or None)]} for the selectors.

    ``known`` maps each capability the fleet has shown to the agents offering it.
    """
    agents: dict[str, set[str]] = {}
    for cap, ids in known.items():
        for a in ids:  # an agent pinned by id runs its capabilities, whatever queues it serves
            agents.setdefault(a, set()).add(cap.partition("@")[0])
    out: dict[str, list[tuple[str, str | None]]] = {v: [] for v in variants}
    for sel in devices:
        if any(ch.isspace() for ch in sel):  # a queue's name holds none: it would fail only when the job is sent
            raise SweepError(f"devices: '{sel}' has a space in it; selectors are like 'litert:cpu', 'litert:cpu@aarch64'")
        if "@" in sel and not sel.startswith("agent:"):  # a machine named as Debian or Apple names it: arm64 -> aarch64
            name, machine = split_selector(sel)
            if not machine:
                raise SweepError(f"devices: '{sel}' names no machine after '@'; e.g. 'litert:cpu@aarch64'")
            sel = f"{name}@{machine}"
        if sel.startswith("agent:"):
            agent = sel.removeprefix("agent:")
            if agent not in agents:
                raise SweepError(f"devices: no agent '{agent}' has been seen; `fleetbench fleet` lists the agents")
            targets = [(c, agent) for c in sorted(agents[agent])]
        elif any(ch in sel for ch in "*?["):
            # 'litert:*' matches capabilities on any machine; 'litert:*@aarch64' those of aarch64 agents
            targets = [(c, None) for c in sorted(known) if ("@" in c) == ("@" in sel) and fnmatch.fnmatchcase(c, sel)]
            if not targets:
                shown = ", ".join(sorted(known)) or "none yet (start an agent)"
                raise SweepError(f"devices: '{sel}' matches no capability the fleet has shown; known: {shown}")
        else:
            if ":" not in sel:
                raise SweepError(f"devices: '{sel}' is not a capability (<runtime>:<device>), a glob or agent:<id>")
            targets = [(sel, None)]
        matched = False
        for variant in variants:
            for cap, pin in targets:
                if _compatible(variant, cap) and (cap, pin) not in out[variant]:
                    out[variant].append((cap, pin))
                    matched = True
        if not matched:
            raise SweepError(f"devices: '{sel}' offers no runtime for the variants {', '.join(variants)}")
    return out
