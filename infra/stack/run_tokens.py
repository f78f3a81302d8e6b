"""The stage's KMS key for run tokens (nimbus/runtime/sealed_token.py), its alias, and the two statements that use it.

A Batch job's environment is readable by whoever may describe the job, so the API seals each run's token
with this key and the run's encryption context; only the runner's role may open it. The key policy gives
the account (root) the key, as AWS's default key policy does: IAM policies then say who uses it.
"""
from __future__ import annotations

import awacs.kms
from awacs.aws import AWSPrincipal, Allow, ForAllValuesStringEquals, Null, StringEquals, Statement
from troposphere import Ref, Sub, kms

from .names import STAGE, run_token_key_alias
from .policy import ANY_RESOURCE, account_arn, allow, arn_of, document

KEY_TITLE = "RunTokenKey"
# Must equal nimbus.runtime.sealed_token.CONTEXT_KEY (tested).
CONTEXT_KEY = "nimbus:run"
PENDING_DAYS = 7  # the shortest wait before a deleted key goes: its ciphertexts live for a run


def key() -> kms.Key:
    owner = Statement(Sid="AccountAdministers", Effect=Allow, Principal=AWSPrincipal(account_arn("iam", "root")),
                      Action=[awacs.kms.Action("*")], Resource=ANY_RESOURCE)
    return kms.Key(
        KEY_TITLE,
        Description=Sub("Seals the run tokens of Nimbus Batch jobs (${Stage})"),
        Enabled=True,
        KeySpec="SYMMETRIC_DEFAULT",
        KeyUsage="ENCRYPT_DECRYPT",
        EnableKeyRotation=True,
        PendingWindowInDays=PENDING_DAYS,
        KeyPolicy=document(owner),
    )


def alias(run_token_key: kms.Key) -> kms.Alias:
    return kms.Alias(f"{KEY_TITLE}Alias", AliasName=Sub(run_token_key_alias(STAGE)), TargetKeyId=Ref(run_token_key))


def _run_context_only() -> list:
    """Only requests whose encryption context is the run's, and nothing else (a request without any
    context would pass ForAllValues alone: Null rules it out)."""
    return [ForAllValuesStringEquals("kms:EncryptionContextKeys", [CONTEXT_KEY]),
            Null("kms:EncryptionContextKeys", "false")]


def seal_statement(run_token_key: kms.Key) -> Statement:
    """The API encrypts run tokens with the stage's key, named through its alias (kms:RequestAlias: an
    IAM policy cannot name a key by its alias in Resource), and may not decrypt them."""
    return allow("SealRunTokens", [awacs.kms.Encrypt], arn_of(run_token_key),
                 StringEquals("kms:RequestAlias", Sub(run_token_key_alias(STAGE))), *_run_context_only())


def open_statement(run_token_key: kms.Key) -> Statement:
    """The runner's role (NIMBUS_RUN_TOKEN_SEALED): decrypt only, with the run's encryption context."""
    return allow("OpenRunTokens", [awacs.kms.Decrypt], arn_of(run_token_key), *_run_context_only())
