"""The Chalice application class the API uses: Chalice, with the current request kept per thread.

Chalice keeps the request being handled on the app object, which is right in Lambda (one request at a
time per process) but not on the local platform, whose server handles requests on many threads: there
one request's view could read another's body. Here each thread sees only its own request.
"""
from __future__ import annotations

import threading

from chalice import Chalice


class NimbusChalice(Chalice):
    _per_thread = threading.local()

    @property
    def current_request(self):
        return getattr(self._per_thread, "request", None)

    @current_request.setter
    def current_request(self, request) -> None:
        self._per_thread.request = request

    @property
    def lambda_context(self):
        return getattr(self._per_thread, "context", None)

    @lambda_context.setter
    def lambda_context(self, context) -> None:
        self._per_thread.context = context
