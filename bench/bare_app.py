"""The HTTP ceiling: a bare Litestar app whose POST endpoint decodes a JSON body and returns a constant.

Served the way ``cloudeasyml serve`` serves the platform (uvicorn with uvloop and httptools, one worker, no
access log), so the difference between the two is what the platform does per request: authentication,
deployment lookup, input decoding, batching, onnxruntime, metering.

Run by the bench as ``python -m uvicorn bench.bare_app:app --workers 1``.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Litestar, get, post
from litestar.params import Body

__all__ = ("app",)

ANSWER = {"predictions": [0.0], "modelName": "bare", "modelVersion": "0", "processingTimeMs": 0.0}


@post("/predict", status_code=200)
async def predict(data: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Decode the body (as any real endpoint must) and answer a constant."""
    return ANSWER


@get("/health")
async def health() -> dict[str, str]:
    """Readiness probe for the bench."""
    return {"status": "healthy"}


app = Litestar(route_handlers=[predict, health], debug=False)
