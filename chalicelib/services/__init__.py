"""The domain: pure Python over the storage ports. Never imports boto3 or sqlite3."""
