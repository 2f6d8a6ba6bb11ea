"""moto's S3 server for the benchmark scripts (the same server the tests start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto() -> tuple[subprocess.Popen[str], str]:
    """moto's server on 127.0.0.1 (tests/support/s3server.py) and its endpoint URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.s3server"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, **CREDS})
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        proc.kill()
        raise SystemExit("could not start moto's server (pip install 'moto[server]')")
    return proc, endpoint
