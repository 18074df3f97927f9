"""The httpx2 side of the request-path hooks (mcp 2.x, fastmcp 4): the core's mixins bound again.

httpx2 is a fork of httpx with the same API and distinct classes (not subclasses), so
:func:`~.hooks.bind_library` binds the library-neutral core a second time, to httpx2's bases. This
module is imported lazily — by :func:`~.hooks.library_for` or the httpx2 client factory — so stack A
never needs httpx2. (httpx2 reads ``response.elapsed`` from the stream; the core's stream passes the
inner stream's value through.)

    >>> from mcpclient_auth.hooks import library_for
    >>> library_for(httpx2.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import httpx2

from .hooks import bind_library

__all__ = ["LIBRARY"]

LIBRARY = bind_library(httpx2)
