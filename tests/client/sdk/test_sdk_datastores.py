"""Datastores through the SDK, in Azure ML v1's names: register_s3, get, get_default, set_as_default, unregister."""
from __future__ import annotations

import pytest

from nimbus import Datastore
from nimbus.exceptions import ConflictError, ForbiddenError, InvalidError, NotFoundError
from nimbus.workspace import Workspace


def test_register_find_default_and_unregister(workspace, s3_compatible):
    assert workspace.get_default_datastore().name == "workspaceblobstore"
    lake = Datastore.register_s3(workspace, "lake", s3_compatible.bucket, prefix="projects",
                                 endpoint_url=s3_compatible.url, access_key_id=s3_compatible.access_key_id,
                                 secret_access_key=s3_compatible.secret_access_key, description="shared")
    assert (lake.datastore_type, lake.bucket_name, lake.prefix, lake.endpoint_url, lake.credential_type) == \
        ("s3", s3_compatible.bucket, "projects", s3_compatible.url, "access_key")
    assert s3_compatible.secret_access_key not in repr(lake.details)
    assert set(workspace.datastores) == {"workspaceblobstore", "lake"}
    assert Datastore.get(workspace, "lake") == lake
    workspace.set_default_datastore("lake")
    assert workspace.get_default_datastore().name == "lake" and Datastore.get(workspace, "lake").is_default
    with pytest.raises(ConflictError):
        lake.unregister()  # the default
    Datastore.get(workspace, "workspaceblobstore").set_as_default()
    lake.update_credentials(s3_compatible.access_key_id, s3_compatible.secret_access_key)
    lake.unregister()
    with pytest.raises(NotFoundError):
        Datastore.get(workspace, "lake")


def test_a_refused_connection_raises_with_the_stores_code(workspace, s3_compatible):
    with pytest.raises(InvalidError) as refused:
        Datastore.register_s3(workspace, "lake", s3_compatible.bucket, endpoint_url=s3_compatible.url,
                              access_key_id=s3_compatible.access_key_id, secret_access_key="not-the-secret-key")
    assert refused.value.field == "credentials.secret_access_key"
    assert refused.value.details == {"store_code": "SignatureDoesNotMatch"}
    with pytest.raises(InvalidError) as half:
        Datastore.register_s3(workspace, "lake", s3_compatible.bucket, access_key_id="only-the-id")
    assert half.value.field == "credentials.secret_access_key"


def test_local_datastores_need_an_admin(platform, workspace, user_token, tmp_path):
    token = user_token("dev")
    workspace.add_member("dev", "contributor")
    with pytest.raises(ForbiddenError):
        Datastore.register_local(Workspace("default", platform.url, token), "disk", str(tmp_path))
