"""Everything AWS Batch: the job plan (spec), the cluster provisioner, the dispatcher that submits runs
as jobs, the reconciliation of job-state events and the sweep, and the throttle-aware calls they share."""
