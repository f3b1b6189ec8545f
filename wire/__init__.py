"""wire: a real-time news wire on Redis streams."""

__version__ = "0.1.0"
