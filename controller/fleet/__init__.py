"""How the scheduler reaches the fleet: the :class:`~controller.fleet.port.FleetPort` interface, today's
Redis and Celery fleet behind it, and an in-memory fleet for tests of the scheduler's logic."""

from controller.fleet.port import Delivered, FleetPort, SetAside

__all__ = ["Delivered", "FleetPort", "SetAside"]
