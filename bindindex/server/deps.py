"""The dependency that hands each route the process's ``Service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bindindex.server.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
