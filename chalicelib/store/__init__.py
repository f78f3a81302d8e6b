"""Storage ports (Table, Blobs, Secrets) and their adapters: aws (DynamoDB, S3, Secrets Manager) and local
(SQLite, filesystem, Fernet-encrypted files)."""
