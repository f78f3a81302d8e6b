"""Chalice's entry point: the API app, assembled in chalicelib/api/app.py."""
from chalicelib.api.app import app

__all__ = ["app"]
