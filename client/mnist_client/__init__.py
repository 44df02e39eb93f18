"""Python client for the MNIST inference service: `Client` / `AsyncClient`, typed results, one error type.

>>> from mnist_client import Client
>>> with Client("http://127.0.0.1:8000") as client:
...     print(client.predict("digit.png").digit)
"""

from mnist_client.client import DEFAULT_URL, AsyncClient, Client, __version__
from mnist_client.errors import MnistError
from mnist_client.protocol import MAX_BATCH_ITEMS, RetryPolicy
from mnist_client.results import ModelInfo, ModelRef, Prediction

__all__ = [
    "DEFAULT_URL",
    "MAX_BATCH_ITEMS",
    "AsyncClient",
    "Client",
    "MnistError",
    "ModelInfo",
    "ModelRef",
    "Prediction",
    "RetryPolicy",
    "__version__",
]
