"""Storage ports (Table, Blobs) and their adapters: aws (DynamoDB, S3) and local (SQLite, filesystem)."""
