"""autoreg: hands-off registration of scientific images, with a verdict you can trust."""

from ._version import __version__

__all__ = ["__version__"]
