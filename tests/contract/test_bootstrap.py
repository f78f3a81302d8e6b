"""The first admin of a deployment, on both backends."""
from chalicelib.api.deps import Services
from chalicelib.bootstrap import create_first_admin
from chalicelib.services.identity import digest


def test_first_admin_once_and_token_stored_as_digest_only(settings):
    token = create_first_admin(settings)
    assert token.startswith("nmb_")
    assert create_first_admin(settings) is None
    services = Services.from_settings(settings)
    principal = services.identity.authenticate(f"Bearer {token}")
    assert principal.user == "admin" and principal.is_admin
    stored = services.ctx.table.get(f"TOKEN#{digest(token)}", "TOKEN")
    assert stored is not None and token not in repr(stored)
