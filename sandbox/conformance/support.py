"""Helpers shared by the conformance tests."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

import consul
from consul.base import Response

FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


def raw(client: consul.Consul, method: str, path: str, params=None, body: Any = None, token: Any = ...) -> Response:
    """One request through py-consul's own HTTP layer, answering the status,
    headers and body unparsed, for what py-consul's typed calls hide
    (status codes, X-Consul-* headers). `body` is sent as JSON unless it is
    a str or bytes; `token` overrides the client's (None: no token)."""
    headers = client.prepare_headers() if token is ... else ({"X-Consul-Token": token} if token else {})
    data: Any
    if body is None:
        data = ""
    elif isinstance(body, (str, bytes)):
        data = body
    else:
        data = json.dumps(body)

    def keep(response: Response) -> Response:
        return response

    http = client.http
    if method == "GET":
        return http.get(keep, path, params=params, headers=headers)
    if method == "PUT":
        return http.put(keep, path, params=params, data=data, headers=headers)
    if method == "DELETE":
        return http.delete(keep, path, params=params, data=data, headers=headers)
    raise ValueError(method)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Polls `predicate` until it answers something truthy; fails after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def check_update(client: consul.Consul, check_id: str, status: str, output: str) -> Response:
    """PUT /v1/agent/check/update/:check_id, which py-consul 1.8.0 has no
    typed call for."""
    return raw(client, "PUT", f"/v1/agent/check/update/{check_id}", body={"Status": status, "Output": output})


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
