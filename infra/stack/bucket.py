"""The artifact bucket: private, encrypted, versioned, TLS only; the studio transfers with presigned URLs."""
from __future__ import annotations

import awacs.s3
from awacs.aws import Bool, Condition, Deny, Principal, SecureTransport, Statement
from troposphere import Ref, Retain, Sub, s3

from .names import STAGE, bucket_name
from .policy import arn_of, document, objects

TITLE = "ArtifactBucket"
MULTIPART_UPLOAD_DAYS = 7  # incomplete multipart uploads are aborted after this


def bucket() -> s3.Bucket:
    resource = s3.Bucket(
        TITLE,
        BucketName=Sub(bucket_name(STAGE)),
        VersioningConfiguration=s3.VersioningConfiguration(Status="Enabled"),
        BucketEncryption=s3.BucketEncryption(ServerSideEncryptionConfiguration=[
            s3.ServerSideEncryptionRule(
                ServerSideEncryptionByDefault=s3.ServerSideEncryptionByDefault(SSEAlgorithm="AES256"))]),
        PublicAccessBlockConfiguration=s3.PublicAccessBlockConfiguration(
            BlockPublicAcls=True, BlockPublicPolicy=True, IgnorePublicAcls=True, RestrictPublicBuckets=True),
        OwnershipControls=s3.OwnershipControls(Rules=[s3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]),
        CorsConfiguration=_studio_cors(),
        LifecycleConfiguration=s3.LifecycleConfiguration(Rules=[s3.LifecycleRule(
            Id="AbortIncompleteMultipartUploads", Status="Enabled",
            AbortIncompleteMultipartUpload=s3.AbortIncompleteMultipartUpload(
                DaysAfterInitiation=MULTIPART_UPLOAD_DAYS))]),
    )
    resource.DeletionPolicy = resource.UpdateReplacePolicy = Retain
    return resource


def _studio_cors() -> s3.CorsConfiguration:
    """The studio uploads and downloads artifacts straight from the browser with presigned URLs."""
    return s3.CorsConfiguration(CorsRules=[s3.CorsRules(
        Id="PresignedTransfers", AllowedMethods=["PUT", "GET"], AllowedOrigins=["*"], AllowedHeaders=["*"],
        ExposedHeaders=["ETag"], MaxAge=3000)])


def bucket_policy(artifacts: s3.Bucket) -> s3.BucketPolicy:
    """Denies every request not made over TLS."""
    deny = Statement(Sid="DenyInsecureTransport", Effect=Deny, Principal=Principal("*"), Action=[awacs.s3.Action("*")],
                     Resource=[arn_of(artifacts), objects(artifacts, "*")],
                     Condition=Condition(Bool(SecureTransport, "false")))
    return s3.BucketPolicy(f"{TITLE}Policy", Bucket=Ref(artifacts), PolicyDocument=document(deny))

