"""LM Studio's WebSocket RPC (the protocol of the `lmstudio` Python SDK and `@lmstudio/sdk`), as a translator onto
the pipeline and the model manager. See docs/sdk.md for which SDK calls work."""
