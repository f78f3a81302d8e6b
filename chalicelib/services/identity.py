"""Users and API tokens. Tokens are random; only their SHA-256 digest is stored."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from chalicelib.errors import Conflict, Forbidden, NotFound, Unauthorized
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.validation import check_name, USER_NAME, USER_RULE
from chalicelib.store.table import ConditionFailed, Put, Query, item_absent
from nimbus.runtime.run_states import TERMINAL

TOKEN_PREFIX = "nmb_"
_TOKEN_SHAPE = re.compile(r"nmb_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through one of their tokens, or a run through its run token."""

    user: str
    is_admin: bool
    token_id: str
    run_id: str | None = None  # set for a run token: it may act on that run only
    workspace: str | None = None


class Identity:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    # --- users ----------------------------------------------------------------------------------
    def create_user(self, name: str, *, is_admin: bool = False, by: Principal | None = None) -> dict:
        self._require_admin(by)
        check_name(name, USER_NAME, "name", USER_RULE)
        key = table_keys.user(name)
        item = {"pk": key.pk, "sk": key.sk, "entity": "user", "name": name, "is_admin": is_admin,
                "created": self.ctx.now(), "created_by": by.user if by else None,
                "gsi1pk": table_keys.USERS_INDEX_PK, "gsi1sk": name}
        try:
            self.ctx.table.put(item, item_absent())
        except ConditionFailed:
            raise Conflict(f"user {name!r} already exists", field="name") from None
        return user_view(item)

    def get_user(self, name: str) -> dict:
        item = self.ctx.table.get_item(table_keys.user(name))
        if item is None:
            raise NotFound(f"user {name!r} not found")
        return user_view(item)

    def list_users(self, by: Principal) -> list[dict]:
        self._require_admin(by)
        return [user_view(i) for i in self.ctx.table.query_all(Query(table_keys.USERS_INDEX_PK, index="gsi1"))]

    # --- tokens ---------------------------------------------------------------------------------
    def create_token(self, user: str, *, name: str = "default", by: Principal | None = None) -> dict:
        """Returns the token's secret once; it is never readable again."""
        if by is not None and by.user != user:
            self._require_admin(by)
        self.get_user(user)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = new_id(self.ctx.clock)
        key = table_keys.token(table_keys.token_digest(secret))
        item = {"pk": key.pk, "sk": key.sk, "entity": "token", "token_id": token_id, "user": user,
                "name": name[:128], "created": self.ctx.now(),
                "gsi1pk": table_keys.tokens_of_index_pk(user), "gsi1sk": f"TOKEN#{token_id}"}
        self.ctx.table.transact([Put(item, item_absent())])
        return {**token_view(item), "token": secret}

    def list_tokens(self, user: str, by: Principal) -> list[dict]:
        if by.user != user:
            self._require_admin(by)
        query = Query(table_keys.tokens_of_index_pk(user), index="gsi1", sk_prefix="TOKEN#")
        return [token_view(i) for i in self.ctx.table.query_all(query)]

    def revoke_token(self, user: str, token_id: str, by: Principal) -> None:
        if by.user != user:
            self._require_admin(by)
        query = Query(table_keys.tokens_of_index_pk(user), index="gsi1", sk_prefix=f"TOKEN#{token_id}")
        found = [i for i in self.ctx.table.query_all(query) if i["token_id"] == token_id]
        if not found:
            raise NotFound(f"token {token_id!r} not found")
        self.ctx.table.delete(found[0]["pk"], found[0]["sk"])

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing Authorization header: send 'Bearer <token>'")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not _TOKEN_SHAPE.fullmatch(secret):
            raise Unauthorized("malformed token: expected 'Authorization: Bearer nmb_…'")
        item = self.ctx.table.get_item(table_keys.token(table_keys.token_digest(secret)))
        if item is None:
            raise Unauthorized("invalid or revoked token")
        if item.get("run_id"):
            return self._run_principal(item)
        user = self.ctx.table.get_item(table_keys.user(item["user"]))
        if user is None:
            raise Unauthorized("the token's user no longer exists")
        return Principal(user=item["user"], is_admin=bool(user.get("is_admin")), token_id=item["token_id"])

    def create_run_token(self, run_id: str, workspace: str, user: str) -> str:
        """A token that acts for one run only, valid until the run ends; only its digest is stored."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = table_keys.token(table_keys.token_digest(secret))
        item = {"pk": key.pk, "sk": key.sk, "entity": "run_token", "token_id": new_id(self.ctx.clock), "user": user,
                "run_id": run_id, "workspace": workspace, "name": f"run {run_id}", "created": self.ctx.now()}
        self.ctx.table.put(item, item_absent())
        return secret

    def _run_principal(self, item: dict) -> Principal:
        run = self.ctx.table.get_item(table_keys.run(item["run_id"]))
        if run is None or run["status"] in TERMINAL:
            raise Unauthorized("this run token has expired: its run has ended")
        return Principal(user=item["user"], is_admin=False, token_id=item["token_id"], run_id=item["run_id"],
                         workspace=item["workspace"])

    def bootstrap_admin(self, name: str = "admin") -> str | None:
        """Creates the first admin and returns its token; None when the admin already exists."""
        try:
            self.create_user(name, is_admin=True)
        except Conflict:
            return None
        return self.create_token(name, name="bootstrap")["token"]

    @staticmethod
    def _require_admin(by: Principal | None) -> None:
        if by is not None and not by.is_admin:
            raise Forbidden("only an admin can do this")


def user_view(item: dict) -> dict:
    return {"name": item["name"], "is_admin": item.get("is_admin", False), "created": item["created"]}


def token_view(item: dict) -> dict:
    return {"token_id": item["token_id"], "user": item["user"], "name": item["name"], "created": item["created"]}
