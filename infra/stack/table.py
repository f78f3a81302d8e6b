"""The stage's one DynamoDB table. Keys, attributes, indexes and billing come from
chalicelib.store.schema, so the deployed table, the moto fixtures and the SQLite adapter cannot disagree."""
from __future__ import annotations

from troposphere import Retain, Sub, dynamodb

from chalicelib.store import schema

from .names import STAGE, table_name

TITLE = "NimbusTable"


def table() -> dynamodb.Table:
    definition = {key: value for key, value in schema.dynamodb_table_definition("unused").items()
                  if key != "TableName"}
    resource = dynamodb.Table.from_dict(TITLE, {
        "TableName": Sub(table_name(STAGE)),
        **definition,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    })
    # Retained on stack deletion and on replacement: the table is the platform's state.
    resource.DeletionPolicy = resource.UpdateReplacePolicy = Retain
    return resource
