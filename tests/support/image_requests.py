"""Image requests against a real server: multipart batches of PNGs, one abandoned by its client after it was
sent, the small canvas other clients post meanwhile, and the server's count of work stopped for a client
that had gone."""

from __future__ import annotations

import re
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageDraw

from trainer.synth.paper import encode

CLOSED = re.compile(r'^mnist_errors_total\{[^}]*reason="client_closed"[^}]*\} (\S+)$', re.MULTILINE)


def canvas() -> bytes:
    """A 280x280 transparent canvas with a drawn 7: what the other clients post."""
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(image).line(
        [(70, 60), (210, 60), (120, 230)], fill=(0, 0, 0, 255), width=18, joint="curve"
    )
    return encode(image, "PNG")


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, files: list[bytes], timeout: float = 30.0) -> httpx.Response:
    body, content_type = multipart(files)
    return httpx.post(
        f"{url}/predict/batch", content=body, headers={"Content-Type": content_type}, timeout=timeout
    )


def closed_count(url: str) -> float:
    """mnist_errors_total{reason="client_closed"}: requests whose work stopped because the client left."""
    match = CLOSED.search(httpx.get(f"{url}/metrics", timeout=5).text)
    return float(match.group(1)) if match else 0.0


def abandon(url: str, files: list[bytes], after_s: float) -> float:
    """Send the batch over a raw socket, wait `after_s`, close without reading; the time of the close."""
    body, content_type = multipart(files)
    parts = urlsplit(url)
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + body)
        time.sleep(after_s)
    return time.monotonic()
