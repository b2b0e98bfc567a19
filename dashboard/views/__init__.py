"""The dashboard's pages, one script each (run by Streamlit, not imported)."""
