"""Candidate sources: two_tower ANN, co_engagement, popular_in_context, targeting; merged with
attribution (see base.py for the interface and merge.py for the union)."""
