"""Nimbus's CloudFormation stack in troposphere (IAM documents in awacs); infra/build.py writes it."""
