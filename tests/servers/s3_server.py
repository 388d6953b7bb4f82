"""An S3-compatible server: moto's (`moto_server`, from PyPI, a dev dependency), on loopback.

It serves the S3 protocol over HTTP, signatures and multipart uploads included, and keeps
objects in its own process; the tests make their bucket with a plain PUT, as a user
would with any S3 client.
"""

import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

ACCESS_KEY_ID = "ottava-test-key"
SECRET_ACCESS_KEY = "ottava-test-secret"
REGION = "us-east-1"


def start() -> ServerProcess:
    port = free_port()
    command = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    return ServerProcess("s3", command, accepts_connections(port), scratch_dir("s3"), port).start()


def endpoint(server: ServerProcess) -> str:
    return f"http://{server.address}"


def create_bucket(server: ServerProcess, bucket: str) -> None:
    """Make the bucket unless it is there already."""
    request = urllib.request.Request(f"{endpoint(server)}/{bucket}", method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.read()
    except urllib.error.HTTPError as err:
        if err.code != 409:  # BucketAlreadyOwnedByYou
            raise


def unfinished_uploads(server: ServerProcess, bucket: str, prefix: str) -> list[str]:
    """Keys of the multipart uploads under `prefix` that were neither completed nor aborted."""
    url = f"{endpoint(server)}/{bucket}?uploads&prefix={urllib.parse.quote(prefix)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        document = ElementTree.fromstring(response.read())
    return [key.text or "" for key in document.iter() if key.tag.endswith("}Key") or key.tag == "Key"]
