"""autoprune: a declarative, plugin-based search for the best way to compress a language model."""

from importlib.metadata import PackageNotFoundError, version

from autoprune.hookspecs import hookimpl

try:
    __version__ = version("autoprune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "hookimpl"]
