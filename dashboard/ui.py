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


# ---------------------------------------------------------------- shareable views
# Every page keeps its choices in the URL's query string (st.query_params), so a copied link opens the same view:
# a widget starts from the value its parameter names (when that is still one of its options) and writes its value
# back on every run.


def keep(param: str, value) -> None:
    """Put a choice in the URL: a list as a repeated parameter; an empty one removed."""
    values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [] if value is None else [str(value)]
    if not values or values == [""]:
        if param in st.query_params:
            del st.query_params[param]
    else:
        st.query_params[param] = values if len(values) > 1 else values[0]


def choice(where, label: str, options: list, key: str, param: str, default: int = 0, radio: bool = False,
           to_param=str, **kw):  # fmt: skip
    """A selectbox (or a horizontal radio) that starts from, and keeps, the URL's ``param`` (``to_param`` gives an
    option's value there: a sweep's id rather than its long label, say)."""
    names = [to_param(o) for o in options]
    wanted = st.query_params.get(param)
    index = names.index(wanted) if wanted in names else default
    widget = where.radio if radio else where.selectbox
    value = widget(label, options, index=index, key=key, **({"horizontal": True} if radio else {}), **kw)
    keep(param, to_param(value))
    return value


def choices(where, label: str, options: list, key: str, param: str, default: list | None = None, **kw) -> list:
    """A multiselect that starts from, and keeps, the URL's ``param``."""
    by_name = {str(o): o for o in options}
    linked = []
    for given in st.query_params.get_all(param):  # repeated; or comma-separated ("threads=1,2"), unless a value
        linked += [by_name[given]] if given in by_name else [by_name[v] for v in given.split(",") if v in by_name]
    value = where.multiselect(label, options, default=linked or default or [], key=key, **kw)
    keep(param, value)
    return value


#: the URL parameter of each sidebar filter
FILTER_PARAMS = {"model_name": ("Model", "model"), "variant": ("Variant", "variant"), "runtime": ("Runtime", "runtime"),
                 "capability": ("Capability", "capability"), "device_name": ("Device", "device"),
                 "hostname": ("Host", "host")}  # fmt: skip


def filters(options, key: str, with_dates: bool = True, skip: tuple[str, ...] = ()) -> data.Filters:
    """Sidebar multiselects over the stored combinations (each narrowed by the choices above it), kept in the URL."""
    st.sidebar.header("Filter")
    chosen: dict[str, tuple[str, ...]] = {c: () for c in skip}
    emulated = emulated_toggle(options)
    rest = options if emulated or options.empty else options[~options["emulated"].astype(bool)]
    for column, (label, param) in FILTER_PARAMS.items():
        if column in skip:
            continue
        values = sorted(rest[column].dropna().unique().tolist())
        picked = choices(st.sidebar, label, values, key=f"{key}-{column}", param=param, placeholder="any")
        chosen[column] = tuple(picked)
        if picked:
            rest = rest[rest[column].isin(picked)]
    since = until = None
    if with_dates and not rest.empty:
        first, last = rest["first"].min().date(), rest["last"].max().date()
        linked = [_date(v) for v in (st.query_params.get("since"), st.query_params.get("until"))]
        start = linked[0] if linked[0] and first <= linked[0] <= last else first
        end = linked[1] if linked[1] and start <= linked[1] <= last else last
        span = st.sidebar.date_input("Dates (UTC)", value=(start, end), min_value=first, max_value=last,
                                     key=f"{key}-dates")  # fmt: skip
        if isinstance(span, (tuple, list)) and len(span) == 2:
            since, until = span
        elif isinstance(span, (tuple, list)) and len(span) == 1:
            since = span[0]
        elif isinstance(span, dt.date):
            since = span
        keep("since", since if since and since != first else None)
        keep("until", until if until and until != last else None)
    return data.Filters(models=chosen["model_name"], variants=chosen["variant"], runtimes=chosen["runtime"],
                        capabilities=chosen["capability"], devices=chosen["device_name"], hosts=chosen["hostname"],
                        since=since, until=until, emulated=emulated)  # fmt: skip


def _emulated_records(options) -> int:
    """How many of the stored records (``filter_options``' counts) are emulated agents'."""
    if options.empty or "emulated" not in options:
        return 0
    return int(options.loc[options["emulated"].astype(bool), "records"].sum())


def has_emulated() -> bool:
    return _emulated_records(query("filter_options")) > 0


def emulated_toggle(options) -> bool:
    """Whether to keep emulated agents' records (off by default; the choice is kept in the URL as ``emulated=1``),
    shown only where some exist, with how many are left out."""
    n = _emulated_records(options)
    if not n:
        return False
    on = st.sidebar.toggle("Include emulated runs", value=st.query_params.get("emulated") == "1", key="emulated",
                           help="Records of agents under CPU emulation (qemu-user). Their accuracy and fidelity are "
                                "real; their timings are the emulator's, not a device's.")  # fmt: skip
    keep("emulated", "1" if on else None)
    if not on:
        st.sidebar.caption(f"{n} record(s) of emulated agents left out: their timings are qemu's, not a device's.")
    return on


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def chart(fig, key: str) -> None:
    """A Plotly chart with its toolbar always shown: its "Download plot as a PNG" saves fleetbench-<key>.png at twice
    the screen's resolution (tables have their own CSV download, in the toolbar over them)."""
    st.plotly_chart(fig, key=key, config={"displayModeBar": True, "displaylogo": False,
                                          "toImageButtonOptions": {"format": "png", "filename": f"fleetbench-{key}",
                                                                   "scale": 2}})  # fmt: skip


def short_id(value) -> str:
    return str(value)[:8] if value else "-"
