"""A second S3, apart from the platform's: moto's server in its own process on 127.0.0.1, with IAM auth on.

Datastores that name an `endpoint_url` are tested against it on both backends. Its first few requests (the
bucket, a user, the user's policy and access key) are made before moto starts checking signatures; from then
on an unknown access key or a wrong secret is refused as AWS refuses it.

moto's signature checks read the Authorization header only, so they fail (500) on presigned URLs, whose
signature is in the query. Files are therefore moved through a second such server with the checks off
(`start(checks_signatures=False)`): what it tests is where the URLs lead and what arrives.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import boto3

BUCKET = "research-data"
UNAUTHENTICATED_SETUP_REQUESTS = 4  # create_bucket, create_user, put_user_policy, create_access_key
ALLOW_S3 = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


@dataclass
class S3Compatible:
    url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    @property
    def keys(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}

    def client(self):
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key)


def start(checks_signatures: bool = True) -> tuple[subprocess.Popen, S3Compatible]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ}
    if checks_signatures:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(UNAUTHENTICATED_SETUP_REQUESTS)
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto's server did not start")
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    anyone = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
              "aws_secret_access_key": "setup"}
    boto3.session.Session().client("s3", **anyone).create_bucket(Bucket=BUCKET)
    iam = boto3.session.Session().client("iam", **anyone)
    iam.create_user(UserName="datastore")
    iam.put_user_policy(UserName="datastore", PolicyName="s3", PolicyDocument=ALLOW_S3)
    key = iam.create_access_key(UserName="datastore")["AccessKey"]
    return process, S3Compatible(url, BUCKET, key["AccessKeyId"], key["SecretAccessKey"])
