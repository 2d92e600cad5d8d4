"""qmtik's version, in a module of its own so that what records it (the C header, the command
line) need not import the whole package."""

__version__ = "0.1.0"
