"""Downloads over HTTP: LM Studio's `POST /api/v1/models/download` and `GET /api/v1/models/download/status/{job_id}`
(the step from "what the user asked for" to a job is lms/store/get.py, shared with the control socket and Ollama's
`/api/pull`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import optional_text, read_json
from lms.errors import LmsError
from lms.store.get import download


async def start_download(request: Request):
    body = await read_json(request)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise LmsError.invalid("'model' is required", "model", code="missing_required_parameter")
    job = await download(request.app.state.downloads, body["model"], quantization=optional_text(body, "quantization"))
    status = job.status_dict()
    shown = {k: status[k] for k in ("job_id", "status", "total_size_bytes", "started_at")}
    if job.status == "completed":
        shown["completed_at"] = status["completed_at"]
    return JSONResponse(shown)


async def download_status(request: Request):
    job = request.app.state.downloads.get(request.path_params["job_id"])
    status = job.status_dict()
    return JSONResponse({k: v for k, v in status.items() if v is not None or k in ("job_id", "status")})


def routes() -> list[Route]:
    return [
        Route("/api/v1/models/download", start_download, methods=["POST"]),
        Route("/api/v1/models/download/status/{job_id}", download_status),
    ]
