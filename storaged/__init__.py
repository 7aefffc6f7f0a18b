"""storaged: the shoalfs daemon (chunk role now, meta role next) and its msgpack-RPC."""

__version__ = "0.1.0"
