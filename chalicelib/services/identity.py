"""Users and API tokens. Tokens are random; only their SHA-256 digest is stored.

A token may expire (`expires_in`) and may be scoped to one workspace with a ceiling on its user's role
there; a scoped token carries none of its user's admin rights and reaches no user-level route
(docs/api.md, "Tokens").
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from chalicelib.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.domain.ids import new_id
from chalicelib.domain.roles import check_role
from chalicelib.domain.timestamps import iso
from chalicelib.domain.validation import check_name, USER_NAME, USER_RULE, WORKSPACE_NAME, WORKSPACE_RULE
from chalicelib.services.audit import Audit
from chalicelib.store.table import (
    Check, ConditionFailed, Delete, Key, Put, Query, Update, attr_eq, item_absent, item_exists,
)
from nimbus.runtime.run_states import TERMINAL

TOKEN_PREFIX = "nmb_"
_TOKEN_SHAPE = re.compile(r"nmb_[A-Za-z0-9_-]{43}")
MIN_EXPIRES_IN, MAX_EXPIRES_IN = 60, 10 * 365 * 86400  # a minute to ten years, in seconds
# `last_used` is refreshed at most this often (seconds): one write per token per hour, not per request.
LAST_USED_EVERY = 3600


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through one of their tokens, or a run through its run token."""

    user: str
    is_admin: bool
    token_id: str
    run_id: str | None = None  # set for a run token: it may act on that run only
    workspace: str | None = None  # the one workspace a run token or a scoped token may act on
    max_role: str | None = None  # a scoped token's ceiling on its user's role in that workspace

    @property
    def scoped(self) -> bool:
        """A user's token limited to one workspace (a run token is limited further, to its run)."""
        return self.run_id is None and self.workspace is not None


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
    def create_token(self, user: str, *, name: str = "default", expires_in: int | None = None,
                     workspace: str | None = None, role: str | None = None, by: Principal | None = None) -> dict:
        """Returns the token's secret once; it is never readable again. `expires_in` (seconds) makes it
        expire; `workspace` scopes it to one workspace its user is a member of, `role` caps the user's
        role there (default: no cap below the membership). A scoped token mints no tokens at all: one
        leaked could otherwise leave tokens behind that outlive its revocation."""
        self._require_unscoped(by, "create tokens")
        if by is not None and by.user != user:
            self._require_admin(by)
        self.get_user(user)
        if expires_in is not None and not MIN_EXPIRES_IN <= expires_in <= MAX_EXPIRES_IN:
            raise Invalid(f"expires_in must be between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN} seconds",
                          field="expires_in")
        if role is not None and workspace is None:
            raise Invalid("role caps a token on one workspace: give workspace too", field="role")
        operations = []
        if workspace is not None:
            check_name(workspace, WORKSPACE_NAME, "workspace", WORKSPACE_RULE)
            role = check_role(role or "owner")
            member = table_keys.member(workspace, user)
            if self.ctx.table.get_item(member) is None:
                raise NotFound(f"{user!r} is not a member of workspace {workspace!r}", field="workspace")
            operations.append(Check(member, item_exists()))  # still a member when the token is written
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = new_id(self.ctx.clock)
        key = table_keys.token(table_keys.token_digest(secret))
        now = self.ctx.clock()
        item = {"pk": key.pk, "sk": key.sk, "entity": "token", "token_id": token_id, "user": user,
                "name": name[:128], "created": iso(now), "workspace": workspace, "max_role": role,
                "expires": iso(now + expires_in) if expires_in else None,
                "expires_at": now + expires_in if expires_in else None,
                "gsi1pk": table_keys.tokens_of_index_pk(user), "gsi1sk": f"TOKEN#{token_id}"}
        operations.insert(0, Put(item, item_absent()))
        if workspace is not None:
            operations.append(Audit(self.ctx).entry(by, workspace, "token.created", token_id, _audited(item)))
        try:
            self.ctx.table.transact(operations)
        except ConditionFailed as failure:
            if failure.index == 1:
                raise NotFound(f"{user!r} is not a member of workspace {workspace!r}", field="workspace") from None
            raise
        return {**token_view(item), "token": secret}

    def list_tokens(self, user: str, by: Principal) -> list[dict]:
        self._require_unscoped(by, "list tokens")
        if by.user != user:
            self._require_admin(by)
        query = Query(table_keys.tokens_of_index_pk(user), index="gsi1", sk_prefix="TOKEN#")
        return [token_view(i) for i in self.ctx.table.query_all(query)]

    def revoke_token(self, user: str, token_id: str, by: Principal) -> None:
        """Deletes the token's item: the next request with it is refused, on either backend (nothing
        caches a token: every request reads its item, consistently)."""
        self._require_unscoped(by, "revoke tokens")
        if by.user != user:
            self._require_admin(by)
        query = Query(table_keys.tokens_of_index_pk(user), index="gsi1", sk_prefix=f"TOKEN#{token_id}")
        found = [i for i in self.ctx.table.query_all(query) if i["token_id"] == token_id]
        if not found:
            raise NotFound(f"token {token_id!r} not found")
        item = found[0]
        operations = [Delete(Key(item["pk"], item["sk"]), attr_eq("token_id", token_id))]
        if item.get("workspace"):
            try:
                operations.append(Audit(self.ctx).entry(by, item["workspace"], "token.revoked", token_id,
                                                        _audited(item)))
            except NotFound:
                pass  # its workspace was deleted: nothing is left to record it in, and the token still goes
        try:
            self.ctx.table.transact(operations)
        except ConditionFailed:
            raise NotFound(f"token {token_id!r} not found") from None

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
        if item.get("expires_at") is not None and self.ctx.clock() >= item["expires_at"]:
            raise Unauthorized(f"this token expired at {item['expires']}; create a new one")
        user = self.ctx.table.get_item(table_keys.user(item["user"]))
        if user is None:
            raise Unauthorized("the token's user no longer exists")
        self._note_use(item)
        scoped = item.get("workspace") is not None
        return Principal(user=item["user"], is_admin=bool(user.get("is_admin")) and not scoped,
                         token_id=item["token_id"], workspace=item.get("workspace"), max_role=item.get("max_role"))

    def _note_use(self, item: dict) -> None:
        now = self.ctx.clock()
        if now - item.get("last_used_at", 0) < LAST_USED_EVERY:
            return
        update = Update(Key(item["pk"], item["sk"]), set={"last_used": iso(now), "last_used_at": now},
                        condition=attr_eq("token_id", item["token_id"]))
        try:
            self.ctx.table.update(update)
        except ConditionFailed:
            pass  # revoked meanwhile: this request was authenticated before, the next one is refused

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

    @staticmethod
    def _require_unscoped(by: Principal | None, what: str) -> None:
        if by is not None and (by.scoped or by.run_id is not None):
            raise Forbidden(f"a token scoped to workspace {by.workspace!r} cannot {what}")


def user_view(item: dict) -> dict:
    return {"name": item["name"], "is_admin": item.get("is_admin", False), "created": item["created"]}


def token_view(item: dict) -> dict:
    """What anyone may see of a token: never its secret, nor its digest."""
    return {"token_id": item["token_id"], "user": item["user"], "name": item["name"], "created": item["created"],
            "expires": item.get("expires"), "workspace": item.get("workspace"), "role": item.get("max_role"),
            "last_used": item.get("last_used")}


def _audited(item: dict) -> dict:
    return {"name": item["name"], "user": item["user"], "role": item.get("max_role"), "expires": item.get("expires")}
