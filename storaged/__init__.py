"""storaged: the shoalfs daemon (the chunk role and the meta role, in one process or apart),
its msgpack-RPC, and the clients other packages use to reach it."""

__version__ = "0.1.0"
