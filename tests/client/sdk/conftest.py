"""The SDK against the real app, served over HTTP in-process (see live_platform)."""
from tests.client.sdk.live_platform import client_env, metrics, platform, user_token, workspace  # noqa: F401
