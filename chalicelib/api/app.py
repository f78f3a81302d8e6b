"""The Nimbus API: one Chalice app, its blueprints and its middleware. No logic lives here.

The repository's app.py hands this app to Chalice; the local platform serves the same object.
"""
from chalicelib.api import (
    admin, audit, batch_events, compute, datasets, datastores, endpoints, environments, experiments, identity,
    openapi, registry, runs, secrets, snapshots, tracking, workspaces,
)
from chalicelib.api.application import NimbusChalice
from chalicelib.api.routing import framework_errors_middleware
from chalicelib.api.request_telemetry import http_middleware

app = NimbusChalice(app_name="nimbus")
app.register_middleware(http_middleware, "http")
app.register_middleware(framework_errors_middleware, "http")
for blueprint in (admin.bp, audit.bp, identity.bp, workspaces.bp, experiments.bp, runs.bp, snapshots.bp, tracking.bp,
                  registry.bp, endpoints.bp, compute.bp, environments.bp, secrets.bp,
                  datastores.bp, datasets.bp, batch_events.bp, openapi.bp):
    app.register_blueprint(blueprint)
