"""The bare POST floor of bench/run.py: FastAPI with one POST route that reads the body and returns a
constant, no middleware. Served by uvicorn with uvloop and httptools, like the service, it is what any
FastAPI endpoint costs before doing anything."""

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
ANSWER = b'{"digit": 0}'


@app.post("/predict")
async def predict(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")
