"""AdLens core library: everything the CLI and the dashboard show is computed here.

See core/README.md for the module map.
"""

__version__ = "0.1.0"
