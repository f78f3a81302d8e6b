"""What runs a job, shared by the client and the server.

The runner (`python -m nimbus.runtime.runner`), the instance agent, environment building, sealed run
tokens and the local worker's processes live here. The server imports only the leaf modules
(`job_spec`, `run_states`, `environment_build`, `sealed_token`, `local_worker`), which need nothing
beyond the standard library and psutil; the runner and the agent are programs built on the SDK's
HTTP client. docs/architecture.md draws who may import whom.
"""
