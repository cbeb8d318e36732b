"""AdLens Streamlit dashboard: pages render what `core` returns."""
