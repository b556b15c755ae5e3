"""Entry point: `fastapi run main.py` or `uvicorn main:app`."""

from prediction_service.api.app import create_app

app = create_app()
