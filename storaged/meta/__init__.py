"""The meta role: volumes, the namespace, chunk maps and the cluster map, in SQLite."""
