"""HTTP handlers for the rating API under /v1/tenants/{tenant_id}/."""

from __future__ import annotations

from aiohttp import web

from edge_node.admission.billable import guarded
from edge_node.admission.router import TenantContext
from edge_node.errors import (
    BadRequest,
    Forbidden,
    KeyMaterialError,
    NotFound,
    ServiceUnavailable,
    field_error,
)
from edge_node.rating.model import (
    check_id,
    check_uuid,
    decode_cursor,
    parse_limit,
    parse_rating,
)
from edge_node.rating.store import TenantStores
from edge_node.rating.tenant_store import DeleteDenied
from edge_node.usage.operations import (
    RATING_CREATE,
    RATING_DELETE,
    RATING_LIST,
    RATING_UPDATE,
    SCORE_READ,
    USER_ERASE,
)
from edge_node.web.answers import encoded_json_response, json_response, read_json

STORES_KEY = web.AppKey("tenant_stores", TenantStores)
LIST_PARAMETERS = frozenset({"item_id", "user_id", "limit", "cursor"})


def _bound_user(context: TenantContext, user_id: str, action: str) -> None:
    """Writers with a token bound to an end user (`sub`) act only on that user's ratings."""
    if context.role == "admin":
        return
    if context.subject is None or context.subject != user_id:
        raise Forbidden(
            f"a {context.role} credential may only {action} the ratings of its own user",
            slug="not-own-rating",
        )


@guarded("writer", {201: RATING_CREATE, 200: RATING_UPDATE})
async def put_rating(request: web.Request, context: TenantContext) -> web.StreamResponse:
    rating = parse_rating(await read_json(request))
    if context.subject is not None and context.role != "admin":
        _bound_user(context, rating.user_id, "write")
    store = request.app[STORES_KEY].get(context.tenant_id)
    try:
        stored, created = await store.batched(lambda: store.upsert(rating))
    except KeyMaterialError as exc:
        raise ServiceUnavailable(
            f"the tenant's data key cannot be used, so the comment cannot be stored: {exc}",
            slug="data-key-unavailable",
        ) from None
    return json_response(stored.to_json(), status=201 if created else 200)


@guarded("reader", RATING_LIST)
async def list_ratings(request: web.Request, context: TenantContext) -> web.StreamResponse:
    query = request.query
    errors = [
        field_error(name, "unknown parameter") for name in query if name not in LIST_PARAMETERS
    ]
    errors += [
        field_error(name, "given more than once")
        for name in LIST_PARAMETERS
        if len(query.getall(name, ())) > 1
    ]
    if errors:
        raise BadRequest("the query is invalid", slug="invalid-parameter", errors=errors)
    item_id = query.get("item_id")
    user_id = query.get("user_id")
    cursor = query.get("cursor")
    document = (
        request.app[STORES_KEY]
        .get(context.tenant_id)
        .page_document(
            item_id=None if item_id is None else check_id("item_id", item_id),
            user_id=None if user_id is None else check_id("user_id", user_id),
            after=None if cursor is None else decode_cursor(cursor),
            limit=parse_limit(query.get("limit")),
        )
    )
    return encoded_json_response(document)


@guarded("reader", SCORE_READ)
async def item_score(request: web.Request, context: TenantContext) -> web.StreamResponse:
    item_id = check_id("item_id", request.match_info["item_id"])
    document = request.app[STORES_KEY].get(context.tenant_id).score_document(item_id)
    return encoded_json_response(document)


@guarded("writer", RATING_DELETE)
async def delete_rating(request: web.Request, context: TenantContext) -> web.StreamResponse:
    rid = check_uuid("rating_id", request.match_info["rating_id"])
    if context.role != "admin" and context.subject is None:
        raise Forbidden(
            "only admins, or tokens bound to the rating's user, delete ratings",
            slug="not-own-rating",
        )
    only_user = None if context.role == "admin" else context.subject
    try:
        store = request.app[STORES_KEY].get(context.tenant_id)
        deleted = await store.batched(lambda: store.delete(rid, only_user=only_user))
    except DeleteDenied:
        raise Forbidden(
            "a writer token may only delete its own user's ratings", slug="not-own-rating"
        ) from None
    if not deleted:
        raise NotFound(f"no rating {rid} in this tenant", slug="rating-not-found")
    return web.Response(status=204)


@guarded("writer", USER_ERASE)
async def erase_user(request: web.Request, context: TenantContext) -> web.StreamResponse:
    user_id = check_id("user_id", request.match_info["user_id"])
    _bound_user(context, user_id, "erase")
    store = request.app[STORES_KEY].get(context.tenant_id)
    erased = await store.batched(lambda: store.erase_user(user_id))
    return json_response({"user_id": user_id, "deleted": erased})


def add_routes(app: web.Application) -> None:
    prefix = "/v1/tenants/{tenant_id}"
    app.router.add_post(f"{prefix}/ratings", put_rating)
    app.router.add_get(f"{prefix}/ratings", list_ratings, allow_head=False)
    app.router.add_get(f"{prefix}/items/{{item_id}}/score", item_score, allow_head=False)
    app.router.add_delete(f"{prefix}/ratings/{{rating_id}}", delete_rating)
    app.router.add_delete(f"{prefix}/users/{{user_id}}", erase_user)
