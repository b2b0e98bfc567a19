"""The Streamlit dashboard: `fleetbench dashboard` serves app.py, which reads the SQL store read-only.

- data.py: the queries (SQLAlchemy, aggregated in SQL), no Streamlit;
- charts.py: the Plotly figures;
- ui.py: cached queries, the page frame and the filters;
- views/: one script per page (Fleet, Sweeps, Explorer, Compare, History).
"""
