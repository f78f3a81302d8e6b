"""The first admin of a deployment, on both backends."""
from chalicelib.wiring import build_services
from chalicelib.bootstrap import create_first_admin
from chalicelib.domain.table_keys import token_digest


def test_first_admin_once_and_token_stored_as_digest_only(settings):
    token = create_first_admin(settings)
    assert token.startswith("nmb_")
    assert create_first_admin(settings) is None
    services = build_services(settings)
    principal = services.identity.authenticate(f"Bearer {token}")
    assert principal.user == "admin" and principal.is_admin
    stored = services.ctx.table.get(f"TOKEN#{token_digest(token)}", "TOKEN")
    assert stored is not None and token not in repr(stored)
