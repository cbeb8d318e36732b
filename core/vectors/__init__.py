"""Imported vectors: a team's own ad vectors and precomputed request vectors, validated and stored
content-addressed under `<workspace>/vectors/<name>/` (see core/vectors/store.py)."""
