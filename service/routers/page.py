"""GET /: the drawing page, one self-contained HTML file (inline CSS/JS, nothing fetched from elsewhere)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The page talks to this same origin only: /predict for answers, /v1/models/lenet5 for the model name."""
    return FileResponse(PAGE, media_type="text/html; charset=utf-8")
