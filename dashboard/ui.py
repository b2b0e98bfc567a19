"""What every page shares: the database URL, cached queries, the page frame, the filters.

Queries run through :mod:`dashboard.data` and are cached per database URL: a
short time for the live pages (Fleet, Sweeps), longer for the rest. A page
never shows a traceback: :func:`page` turns any failure into a message that
says what to do, and an empty database into "run `fleetbench demo` first".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os

import streamlit as st

from dashboard import data
from protocol.redact import token_in

#: Set by `fleetbench dashboard` (the URL is not put on the command line, where ps would show its password).
DB_ENV = "FLEETBENCH_DASHBOARD_DB"
EMPTY = ("No benchmark records in this database yet. Run `fleetbench demo` first (or `make demo`), "
         "then reload this page.")  # fmt: skip
LIVE_TTL_S = 5
TTL_S = 60
log = logging.getLogger("fleetbench.dashboard")


def db_url() -> str:
    from controller.config import default_data_dir

    url = os.environ.get(DB_ENV) or os.environ.get("FLEETBENCH_DB_URL")
    return url or f"sqlite:///{default_data_dir() / 'fleetbench.db'}"


@st.cache_resource(show_spinner=False)
def _engine(url: str):
    return data.readonly_engine(url)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=200)
def _live(url: str, name: str, args: tuple, kwargs: tuple):
    return getattr(data, name)(_engine(url), *args, **dict(kwargs))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=200)
def _slow(url: str, name: str, args: tuple, kwargs: tuple):
    return getattr(data, name)(_engine(url), *args, **dict(kwargs))


def query(name: str, *args, live: bool = False, **kwargs):
    """``dashboard.data.<name>(engine, *args, **kwargs)``, cached."""
    return (_live if live else _slow)(db_url(), name, args, tuple(sorted(kwargs.items())))


#: the tokens that open the dashboard (comma-separated); `fleetbench dashboard` sets it beyond loopback
TOKENS_ENV = "FLEETBENCH_DASHBOARD_TOKENS"


def gate() -> None:
    """With FLEETBENCH_DASHBOARD_TOKENS set, every page waits for one of its tokens (compared in constant time);
    a session that gave one stays open."""
    tokens = [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    if not tokens or st.session_state.get("fleetbench-authed"):
        return
    st.title("fleetbench")
    with st.form("fleetbench-login"):
        given = st.text_input("Token", type="password", help="One of the API's user tokens (FLEETBENCH_API_TOKENS)")
        sent = st.form_submit_button("Open")
    if sent:
        if token_in(given, tokens):
            st.session_state["fleetbench-authed"] = True
            st.rerun()
        st.error("That is not one of this dashboard's tokens; ask whoever runs it for one.")
    st.stop()


@contextlib.contextmanager
def page(title: str, caption: str = "", needs: str = "results"):
    """The frame of a page: its title, then the body, or a friendly message instead of a traceback.

    ``needs`` names what must exist for the page to say anything ("results", "agents" or "sweeps").
    """
    st.title(title)
    if caption:
        st.caption(caption)
    try:
        counts = query("counts", live=True)
    except Exception as exc:  # noqa: BLE001 - the page says what failed instead of a raw traceback
        _show(title, exc)
        st.stop()
    if counts[needs] == 0:
        st.info(EMPTY if needs == "results" or counts["results"] == 0 else f"No {needs} recorded yet. {EMPTY}")
        st.stop()
    try:
        yield counts
    except Exception as exc:  # noqa: BLE001
        _show(title, exc)


def _show(title: str, exc: Exception) -> None:
    if isinstance(exc, data.DashboardError):
        st.error(str(exc))
        return
    log.exception("dashboard page %s failed", title)
    st.error(f"This page could not be drawn: {type(exc).__name__}: {exc}. The dashboard's log has the details; "
             "please report it with that log.")  # fmt: skip


def filters(options, key: str, with_dates: bool = True, skip: tuple[str, ...] = ()) -> data.Filters:
    """Sidebar multiselects over the stored combinations (each narrowed by the choices above it)."""
    st.sidebar.header("Filter")
    chosen: dict[str, tuple[str, ...]] = {c: () for c in skip}
    labels = {"model_name": "Model", "variant": "Variant", "runtime": "Runtime", "capability": "Capability",
              "device_name": "Device", "hostname": "Host"}  # fmt: skip
    rest = options
    for column, label in labels.items():
        if column in skip:
            continue
        values = sorted(rest[column].dropna().unique().tolist())
        picked = st.sidebar.multiselect(label, values, key=f"{key}-{column}", placeholder="any")
        chosen[column] = tuple(picked)
        if picked:
            rest = rest[rest[column].isin(picked)]
    since = until = None
    if with_dates and not rest.empty:
        first, last = rest["first"].min().date(), rest["last"].max().date()
        span = st.sidebar.date_input("Dates (UTC)", value=(first, last), min_value=first, max_value=last,
                                     key=f"{key}-dates")  # fmt: skip
        if isinstance(span, (tuple, list)) and len(span) == 2:
            since, until = span
        elif isinstance(span, (tuple, list)) and len(span) == 1:
            since = span[0]
        elif isinstance(span, dt.date):
            since = span
    return data.Filters(models=chosen["model_name"], variants=chosen["variant"], runtimes=chosen["runtime"],
                        capabilities=chosen["capability"], devices=chosen["device_name"], hosts=chosen["hostname"],
                        since=since, until=until)  # fmt: skip


def short_id(value) -> str:
    return str(value)[:8] if value else "-"
