"""Uploaded objects: images a tenant stores once and names from any item as ``store://uploads/NAME``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request

from mfpo.ids import check_safe_id
from mfpo.images import ImageError, ImageLimits, verify_image
from mfpo.jobs import uploads_prefix
from services.gateway.deps import JobStoreDep, SettingsDep, TenantDep
from services.gateway.schemas import AUTHED_ERRORS, UploadedObject

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=AUTHED_ERRORS)


@router.put("/{name}", openapi_extra={"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_upload(
    name: Annotated[str, Path(description="Object name: 1-128 of letters, digits, '.', '_', '-'.")],
    request: Request, tenant: TenantDep, jobs: JobStoreDep, settings: SettingsDep,
) -> UploadedObject:
    """Store an image (the raw body) under the tenant's uploads; items then name it ``store://uploads/NAME``.

    The image is checked as at intake (header, pixels under the deployment's ``max_image_pixels``, integrity);
    a PUT to an existing name replaces it. The body limit is ``max_body_bytes``."""
    try:
        check_safe_id(name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    data = await request.body()
    limits = ImageLimits(max_pixels=settings.max_image_pixels)
    try:
        width, height, _ = verify_image(data, limits)
    except ImageError as exc:
        raise HTTPException(422, f"not a usable image: {exc}") from None
    jobs.store.put(uploads_prefix(tenant) + name, data, request.headers.get("content-type") or "image/png")
    return UploadedObject(ref=f"store://uploads/{name}", bytes=len(data), width=width, height=height)
