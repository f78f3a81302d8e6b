"""The one table's key schema. infra/, the moto fixtures and the SQLite adapter all read it from here."""
from __future__ import annotations

PK, SK = "pk", "sk"

# index name -> (partition key attribute, sort key attribute); every index projects ALL attributes.
INDEXES: dict[str, tuple[str, str]] = {
    "gsi1": ("gsi1pk", "gsi1sk"),
    "gsi2": ("gsi2pk", "gsi2sk"),
}

KEY_ATTRIBUTES = (PK, SK) + tuple(a for pair in INDEXES.values() for a in pair)


def dynamodb_table_definition(table_name: str) -> dict:
    """Arguments for DynamoDB CreateTable (also the body of the CloudFormation table's properties)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in KEY_ATTRIBUTES],
        "KeySchema": [
            {"AttributeName": PK, "KeyType": "HASH"},
            {"AttributeName": SK, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": range_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for name, (hash_key, range_key) in INDEXES.items()
        ],
    }
