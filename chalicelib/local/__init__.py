"""The local platform: the same Chalice app served over HTTP on one machine, on the embedded backend."""
