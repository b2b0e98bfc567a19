"""The controller's HTTP API (FastAPI): ``app.py`` assembles it (its docstring is the API's description),
``auth.py`` holds the tokens, ``limits.py`` the body limits, ``uploads.py`` and ``sweeps.py`` the routes,
``state.py`` what they share, ``errors.py`` the one shape of error."""

from controller.api.app import create_app
from controller.api.auth import Tokens
from controller.api.errors import _scrub
from controller.api.limits import API
from controller.config import FLEET_RECORD_S

__all__ = ["API", "FLEET_RECORD_S", "Tokens", "_scrub", "create_app"]
