"""openpi-compatible client: msgpack-numpy wire format, websocket client policy, action chunk broker, image tools.

Depends only on numpy, msgpack and websockets, so it installs on a robot computer without JAX.
"""

__version__ = "0.1.0"
