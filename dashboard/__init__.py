"""The Streamlit dashboard (reads the SQL store, read-only). Arrives with the dashboard issue."""
