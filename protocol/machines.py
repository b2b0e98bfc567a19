"""Machine architectures: how agents name them, and the capability selectors that route by them.

A capability name (``litert:cpu``) says what runs, not where: a Raspberry Pi and a server both offer
``litert:cpu``. A selector may add the machine architecture after ``@`` (``litert:cpu@aarch64``); an
agent serves both queues, its capabilities' plain names and the same names ``@`` its machine, so a job
sent to ``litert:cpu@aarch64`` is taken only by an aarch64 agent. Standard library only.
"""

from __future__ import annotations

#: Other names of the same architecture (Debian's, Apple's, Windows') -> the name Linux's ``uname -m`` gives.
ALIASES = {"arm64": "aarch64", "armv8": "aarch64", "amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64",
           "i386": "i686", "x86": "i686", "armhf": "armv7l"}  # fmt: skip
#: Architectures whose 32-bit processes run natively on a 64-bit kernel of another name (compat mode).
COMPAT = {"aarch64": ("armv7l", "armv8l", "armv6l"), "x86_64": ("i686", "i586", "i386")}


def canonical(machine: str) -> str:
    """``machine`` as ``uname -m`` names it: ``arm64`` -> ``aarch64``, ``AMD64`` -> ``x86_64``."""
    m = (machine or "").strip().lower()
    return ALIASES.get(m, m)


def split_selector(capability: str) -> tuple[str, str]:
    """``"litert:cpu@arm64"`` -> ``("litert:cpu", "aarch64")``; a plain name -> ``(name, "")``."""
    name, _, machine = capability.partition("@")
    return name, canonical(machine)


def with_machine(names, machine: str, emulated: bool = False) -> set[str]:
    """What an agent on ``machine`` serves: each capability name, and each name ``@machine``. An emulated agent
    serves only the ``@machine`` names: a job that names no machine never lands on an emulator by chance."""
    out = set() if emulated and machine else set(names)
    if machine:
        out |= {f"{n}@{canonical(machine)}" for n in names}
    return out


def offered(inventory) -> set[str]:
    """Every name an agent's inventory (an AgentInventory) is served by: :func:`with_machine` of its capabilities."""
    host = inventory.host
    return with_machine([c.name for c in inventory.capabilities], host.machine, bool(host.emulated_by))


def runs_natively(machine: str, kernel: str) -> bool:
    """Whether a process of ``machine`` runs natively on a kernel of ``kernel`` (itself, or its compat mode)."""
    machine, kernel = canonical(machine), canonical(kernel)
    return machine == kernel or machine in COMPAT.get(kernel, ())
