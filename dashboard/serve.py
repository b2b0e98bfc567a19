"""`python -m dashboard.serve [streamlit flags]`: `streamlit run dashboard/app.py`, with the heavy
imports done before the server listens, so the first page a user opens is drawn ~0.8 s sooner
(bench/dashboard.py measures it). `fleetbench dashboard` runs this."""

import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def main(argv: list[str]) -> None:
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import plotly.subplots  # noqa: F401
    import sqlalchemy  # noqa: F401

    import dashboard.charts  # noqa: F401
    import dashboard.data  # noqa: F401
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
