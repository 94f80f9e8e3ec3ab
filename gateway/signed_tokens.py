"""Signed URL tokens that carry a number and a string."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer


def load_pair(serializer: URLSafeSerializer, token: str) -> tuple[int, str] | None:
    """Return the (number, text) pair a token carries, or None when it is not ours."""
    try:
        payload = serializer.loads(token)
    except BadSignature:
        return None
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not isinstance(payload[0], int)
        or isinstance(payload[0], bool)
        or not isinstance(payload[1], str)
    ):
        return None
    return payload[0], payload[1]
