"""The artifact bucket: private, encrypted, versioned, TLS only; the studio transfers with presigned URLs.

Browsers send those transfers cross-origin, so the bucket's CORS rule names the studio's origin, the
StudioOrigin parameter; without one the bucket has no CORS rule and browsers cannot transfer at all.
"""
from __future__ import annotations

import awacs.s3
from awacs.aws import Bool, Condition, Deny, Principal, SecureTransport, Statement
from troposphere import Equals, If, Not, NoValue, Parameter, Ref, Retain, Sub, s3

from .names import STAGE, bucket_name
from .policy import arn_of, document, objects

TITLE = "ArtifactBucket"
STUDIO_ORIGIN = "StudioOrigin"
HAS_STUDIO_ORIGIN = "HasStudioOrigin"
# One origin, scheme://host[:port], or none: no wildcard, no path.
ORIGIN_PATTERN = r"^(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?)?$"
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
        CorsConfiguration=If(HAS_STUDIO_ORIGIN, _studio_cors(), NoValue),
        LifecycleConfiguration=s3.LifecycleConfiguration(Rules=[s3.LifecycleRule(
            Id="AbortIncompleteMultipartUploads", Status="Enabled",
            AbortIncompleteMultipartUpload=s3.AbortIncompleteMultipartUpload(
                DaysAfterInitiation=MULTIPART_UPLOAD_DAYS))]),
    )
    resource.DeletionPolicy = resource.UpdateReplacePolicy = Retain
    return resource


def studio_origin() -> Parameter:
    return Parameter(
        STUDIO_ORIGIN, Type="String", Default="", AllowedPattern=ORIGIN_PATTERN,
        ConstraintDescription="one origin, such as https://studio.example.com, or empty",
        Description="The studio's origin (scheme://host[:port]), the only one whose browsers may transfer "
                    "artifacts with presigned URLs; empty: no CORS rule on the artifact bucket.")


def has_studio_origin() -> Not:
    return Not(Equals(Ref(STUDIO_ORIGIN), ""))


def _studio_cors() -> s3.CorsConfiguration:
    """The studio uploads and downloads artifacts straight from the browser with presigned URLs."""
    return s3.CorsConfiguration(CorsRules=[s3.CorsRules(
        Id="PresignedTransfers", AllowedMethods=["PUT", "GET"], AllowedOrigins=[Ref(STUDIO_ORIGIN)],
        AllowedHeaders=["*"], ExposedHeaders=["ETag"], MaxAge=3000)])


def bucket_policy(artifacts: s3.Bucket) -> s3.BucketPolicy:
    """Denies every request not made over TLS."""
    deny = Statement(Sid="DenyInsecureTransport", Effect=Deny, Principal=Principal("*"), Action=[awacs.s3.Action("*")],
                     Resource=[arn_of(artifacts), objects(artifacts, "*")],
                     Condition=Condition(Bool(SecureTransport, "false")))
    return s3.BucketPolicy(f"{TITLE}Policy", Bucket=Ref(artifacts), PolicyDocument=document(deny))

