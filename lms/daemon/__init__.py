"""The long-lived daemon: control API on a unix socket, public HTTP API on demand, model workers."""
