"""The dashboard at /ui: one page and its two assets, all served from here (no CDN)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=UI_DIR)


@router.get("/ui")
async def dashboard() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})
