"""file.s3 signs its requests itself (SigV4): the signatures match botocore's, AWS's reference signer.

moto's server does not check signatures, so the conformance suite alone would not catch
a wrong one; botocore (installed with moto) computes the same signature independently.
"""

import datetime
import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from ottava_sidecar.components.file import s3api

CREDENTIALS = s3api.S3Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
HOST = "127.0.0.1:9000"


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body"),
    [
        ("GET", "/media/", "delimiter=%2F&list-type=2&max-keys=2&prefix=photos%2F", {}, b""),
        ("PUT", "/media/photos/caf%C3%A9%20menu%2Bv2.txt", "", {"x-amz-meta-owner": "billing"}, b"hello"),
        ("PUT", "/media/big.bin", "partNumber=3&uploadId=abc%2Fdef", {}, b"part"),
        ("POST", "/media/big.bin", "uploads=", {}, b""),
        ("HEAD", "/media/", "", {}, b""),
    ],
)
def test_the_signature_is_botocores(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    reference = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    S3SigV4Auth(BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key), "s3", "eu-west-1").add_auth(
        reference
    )
    when = datetime.datetime.strptime(reference.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)

    ours = s3api.sign(
        method, HOST, path, query, headers, hashlib.sha256(body).hexdigest(), "eu-west-1", CREDENTIALS, when
    )

    assert ours["authorization"] == reference.headers["Authorization"]
