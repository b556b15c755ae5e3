"""The HTTP floor: bare FastAPI endpoints of the same shape as the project's, doing no work.

    uvicorn floor:app   (from bench/)

GET /predict takes the same two float query parameters and answers a constant JSON body;
POST /predict-image reads the uploaded file and answers its size. What the project achieves
against these is what its own work costs.
"""

from fastapi import FastAPI, UploadFile

app = FastAPI()
ANSWER = {"parameters": {"bill_length_mm": 40.3, "flipper_length_mm": 195.0}, "result": "Adelie"}


@app.get("/predict")
async def predict(bill_length_mm: float, flipper_length_mm: float) -> dict:
    return ANSWER


@app.post("/predict-image")
async def predict_image(file: UploadFile) -> dict:
    data = await file.read()
    return {"filename": file.filename, "size": len(data)}
