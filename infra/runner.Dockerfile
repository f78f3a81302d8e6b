# The runner image: what an AWS Batch job of Nimbus runs (`python -m nimbus.runtime.runner`, see
# chalicelib/compute/batch_spec.py). Build from the repository root:
#
#   docker build -f infra/runner.Dockerfile -t nimbus-runner .
#
# Runs naming an environment use that environment's image instead; this one serves the others.
FROM python:3.11-slim

# Unbuffered output reaches the run's log (and CloudWatch) as it is printed.
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/nimbus
# The client package (SDK, CLI, runner) with boto3 to open sealed run tokens, pinned like the service.
COPY requirements.txt pyproject.toml README.md ./
COPY nimbus ./nimbus
COPY chalicelib ./chalicelib
RUN pip install -c requirements.txt ".[aws-runner]" && rm -rf /opt/nimbus/*

# A user of its own: the script runs as it, not as root. The job folder (code, outputs) is its home.
RUN useradd --create-home --home-dir /job nimbus
USER nimbus
WORKDIR /job

# Batch gives the command (`python -m nimbus.runtime.runner`) and the NIMBUS_* variables of the run.
CMD ["python", "-m", "nimbus.runtime.runner"]
