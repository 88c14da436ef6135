"""A real S3-compatible server on 127.0.0.1 for the object-storage tests: moto's
``ThreadedMotoServer``, started once per test module by the ``s3`` fixture and stopped after.

The fixture points the AWS environment at it (``AWS_ENDPOINT_URL``, dummy credentials, no
profile), so the library finds it the way a user's environment would, and subprocesses
started by a test inherit it. ``tests/conftest.py`` imports the fixture, so any test module
takes it as a parameter named ``s3``, with no import of its own.
"""

from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs
import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_DROP = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


class S3:
    """The running server: ``endpoint`` (http://127.0.0.1:PORT), ``fs`` (a pyarrow client
    for set-up and checks), ``bucket()`` (a fresh bucket's name), ``keys(bucket)``."""

    def __init__(self, server, endpoint):
        self.server = server
        self.endpoint = endpoint
        self.fs = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True,
                                    access_key="testing", secret_key="testing", region="us-east-1")

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:10]}"
        self.fs.create_dir(name)
        return name

    def keys(self, bucket: str) -> list[str]:
        sel = pafs.FileSelector(bucket, recursive=True)
        return sorted(i.path[len(bucket) + 1:] for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """The same port again; moto keeps its buckets in this process, so they are all there."""
        from moto.server import ThreadedMotoServer

        host, port = self.endpoint.rsplit("/", 1)[1].split(":")
        self.server = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
        self.server.start()


@pytest.fixture(scope="module")
def s3():
    server_mod = pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in (*_ENV, *_DROP, "AWS_ENDPOINT_URL")}
    os.environ.update(_ENV, AWS_ENDPOINT_URL=endpoint)
    for k in _DROP:
        os.environ.pop(k, None)
    state = S3(server, endpoint)
    try:
        yield state
    finally:
        try:
            state.server.stop()
        except Exception:  # already stopped by the test
            pass
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
