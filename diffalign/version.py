"""The package version, in a module of its own so `diffalign --version` needs no torch."""

__version__ = "0.1.0"
