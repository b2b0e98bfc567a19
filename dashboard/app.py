"""The Streamlit app: `fleetbench dashboard` runs `streamlit run` on this file.

Each page is its own script under views/, so Streamlit's AppTest can run one
page on its own (tests/test_dashboard_pages.py).
"""

from pathlib import Path

import streamlit as st

from dashboard import ui

HERE = Path(__file__).parent / "views"

st.set_page_config(page_title="fleetbench", page_icon=":material/speed:", layout="wide")
PAGES = [
    st.Page(HERE / "fleet.py", title="Fleet", icon=":material/devices:", default=True),
    st.Page(HERE / "sweeps.py", title="Sweeps", icon=":material/play_circle:"),
    st.Page(HERE / "explorer.py", title="Explorer", icon=":material/scatter_plot:"),
    st.Page(HERE / "compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page(HERE / "profile.py", title="Profile", icon=":material/stacked_bar_chart:"),
    st.Page(HERE / "history.py", title="History", icon=":material/timeline:"),
    st.Page(HERE / "regressions.py", title="Regressions", icon=":material/notifications:"),
]
page = st.navigation(PAGES)  # first: the page a link names is kept while the token is asked for
ui.gate()  # beyond loopback, a token first (`fleetbench dashboard` sets FLEETBENCH_DASHBOARD_TOKENS)
page.run()
