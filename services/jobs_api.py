"""The job routes: the job client (``ganforge.jobs``) over HTTP, behind a bearer token.

``POST /jobs`` takes the typed job spec (``ganforge.spec.TrainConfig``), so the OpenAPI schema
shows every field with its range. Without ``GANFORGE_API_TOKEN`` on the service these routes
answer 503.
"""

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import Response

from ganforge import jobs
from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from services.schemas import Artifact, JobId


def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
    token = get_settings().api_token
    if token is None:
        raise HTTPException(503, "job endpoints are off: set GANFORGE_API_TOKEN on the service")
    expected = f"Bearer {token.get_secret_value()}".encode()
    # bytes, not str: compare_digest refuses non-ASCII str, which would be a 500
    given = (authorization or "").encode("utf-8", "surrogateescape")
    if authorization is None or not hmac.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_token)])


@router.post("", status_code=202)
def submit_job(spec: TrainConfig) -> dict[str, Any]:
    """Validate and queue a training job; returns its status (PENDING)."""
    return jobs.status(jobs.submit(spec)).to_dict()


@router.get("")
def list_jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    return {"jobs": [st.to_dict() for st in jobs.list_jobs(limit)]}


@router.get("/{job_id}")
def job_status(job_id: JobId) -> dict[str, Any]:
    return jobs.status(job_id).to_dict()


@router.get("/{job_id}/{name}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def job_artifact(job_id: JobId, name: Artifact) -> Response:
    """The job's newest fixed-noise sample grid, or its loss curves, as PNG."""
    file_name, data = jobs.artifact(job_id, name)
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "no-store", "X-File": file_name})


@router.delete("/{job_id}")
def cancel_job(job_id: JobId) -> dict[str, Any]:
    return jobs.cancel(job_id).to_dict()
