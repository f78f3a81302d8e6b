"""The API's Chalice app keeps the request being handled per thread (the local server uses many)."""
from __future__ import annotations

import threading

from chalicelib.api.application import NimbusChalice


def test_each_thread_sees_only_its_own_request():
    app = NimbusChalice(app_name="probe")
    app.current_request, app.lambda_context = "request of the main thread", "its context"
    seen = []

    def other_thread():
        seen.append((app.current_request, app.lambda_context))
        app.current_request = "request of the other thread"
        seen.append(app.current_request)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen == [(None, None), "request of the other thread"]
    assert (app.current_request, app.lambda_context) == ("request of the main thread", "its context")
