"""The client frames of LM Studio's SDK protocol as a pydantic model, for the OpenAPI document (its
`x-websocket` entries); the server reads frames with lms.api.lmstudio.frames."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

NAMESPACES_SERVED = ("system", "llm", "embedding")


class LmStudioSdkFrame(BaseModel):
    """One JSON text frame from an SDK client, after its first frame (the auth frame: `{"authVersion": 1,
    "clientIdentifier", "clientPasskey"}`, answered `{"success": true}` or `{"success": false, "error"}`)."""

    type: Literal["rpcCall", "channelCreate", "channelSend", "channelAck", "keepAlive", "signalSubscribe",
                  "signalUnsubscribe", "communicationWarning"]
    endpoint: str | None = Field(None, description="rpcCall and channelCreate: the namespace's endpoint")
    callId: int | None = Field(None, description="rpcCall: the client's id, echoed in rpcResult or rpcError")
    channelId: int | None = Field(None, description="channel frames: the client's id of the channel")
    parameter: object | None = Field(None, description="rpcCall: the endpoint's parameter")
    creationParameter: object | None = Field(None, description="channelCreate: the channel's parameter")
    message: object | None = Field(None, description="channelSend: e.g. {\"type\": \"cancel\"}")


def namespace_description(namespace: str) -> str:
    served = "see docs/sdk.md for its endpoints" if namespace in NAMESPACES_SERVED else \
        "not served yet: every call gets a communicationWarning and an rpcError or channelError"
    return (f"LM Studio's SDK protocol, namespace `{namespace}` ({served}). The first frame is the auth frame; "
            "with API tokens its identifier and passkey are the two halves of a token.")
