"""Everything the Nimbus serverless functions run."""
