"""OpenAI-style error bodies, the same shape vLLM's front end uses: {"error": {message, type, param, code}}."""

from __future__ import annotations

from http import HTTPStatus


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """The body of an error answered by sambay-serve's own layer (auth, admission, limits).

    ``type`` is the HTTP phrase in vLLM's style ("BadRequestError" for 400, …) so that clients see
    one error shape whether vLLM or this layer refused the request. 429 keeps the type clients of
    the earlier sambay-serve (and OpenAI's SDK docs) match on, ``rate_limit_error``.
    """
    if status == 429:
        return {"error": {"message": message, "type": "rate_limit_error", "param": param, "code": status}}
    phrase = HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    kind = phrase if phrase.endswith("Error") else f"{phrase}Error"  # 400 -> "BadRequestError"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}
