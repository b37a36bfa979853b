"""Client for the listening-test platform's JSON API (docs/api.md), standard library only.

``listening_client.lightning.PushCheckpoints`` is a PyTorch Lightning callback that pushes a
checkpoint at chosen validation epochs; it is imported on its own, so this package needs
neither torch nor Lightning.
"""

from .client import (
    ApiConnectionError,
    ApiError,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RenderFailed,
    Unauthorized,
    WaitTimeout,
    encode_multipart,
    print_progress,
)

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "NotFound",
    "RenderFailed",
    "Unauthorized",
    "WaitTimeout",
    "encode_multipart",
    "print_progress",
]
